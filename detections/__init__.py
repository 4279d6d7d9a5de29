"""Sigma rules over the OpenAI audit log, as data: one YAML file per rule (a correlation with
the rules it counts beside it), in the rules' own field names, which `mappings.sigma` maps to
our ECS and OCSF documents. `forwarder.detections` loads, converts and exports them."""
