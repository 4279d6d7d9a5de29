"""The rules pass pySigma's own validators and SigmaHQ's (pysigma-validators-sigmahq), offline.
The validators that download reference data at run time (MITRE ATT&CK and D3FEND, SigmaHQ's
field and logsource lists) are named and left out; with the network cut, every other one runs
and reports nothing."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from sigma.plugins import InstalledSigmaPlugins
from sigma.validation import SigmaValidator

from forwarder.detections import load_rules

#: Download their data from GitHub (attack.mitre.org's STIX bundle, d3fend.mitre.org, SigmaHQ's
#: taxonomy and filename lists) the first time they run.
DOWNLOADING = {
    "attacktag",
    "d3_fendtag",
    "sigmahq_fieldname_cast",
    "sigmahq_filename_prefix",
    "sigmahq_invalid_fieldname",
    "sigmahq_logsource_unknown",
    "sigmahq_redundant_field",
    "sigmahq_tags_techniques_without_tactics",
}


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No network, and empty data caches (a developer's ~/.cache/pysigma may hold a download)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access in a validator")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    from sigma.data import mitre_attack, mitre_d3fend
    from sigma.validators.sigmahq.data import (
        data_filename,
        data_taxonomy,
        data_windows_eventid,
        data_windows_provider,
    )

    for module in (
        mitre_attack,
        mitre_d3fend,
        data_filename,
        data_taxonomy,
        data_windows_eventid,
        data_windows_provider,
    ):
        module.set_cache_dir(str(tmp_path / module.__name__))


def _validators() -> dict[str, type]:
    return InstalledSigmaPlugins.autodiscover().validators


def test_the_sigmahq_validators_are_installed_and_the_left_out_ones_exist() -> None:
    validators = _validators()
    assert sum(name.startswith("sigmahq_") for name in validators) > 40
    assert set(validators) >= DOWNLOADING


def test_every_offline_validator_passes_every_rule(offline: None) -> None:
    rules = load_rules()
    validators = [cls for name, cls in sorted(_validators().items()) if name not in DOWNLOADING]
    issues = list(SigmaValidator(validators).validate_rules(rules))
    assert not issues, "\n".join(str(i)[:300] for i in issues)


@pytest.mark.parametrize("name", sorted(DOWNLOADING))
def test_a_left_out_validator_does_need_the_network(offline: None, name: str) -> None:
    # If one stops downloading, it belongs in the offline run: this fails and says which.
    with pytest.raises(RuntimeError, match="Failed to load"):
        list(SigmaValidator([_validators()[name]]).validate_rules(load_rules()))
