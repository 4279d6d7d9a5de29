"""Target-schema mappings (ECS, OCSF, raw), driven by one event catalog."""
