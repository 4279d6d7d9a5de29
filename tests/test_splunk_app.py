"""packaging/splunk is a Splunk app that Splunk's own checker, splunk-appinspect, passes with no
failure or warning; the generic sourcetype gets every schema's event time; the CIM fields name
fields our documents have; eventtypes and tags are consistent."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import orjson
import pytest

from tests.test_packaging import (
    SOURCETYPES,
    SPLUNK,
    _mapped_lines,
    _splunk_conf,
    _splunk_time,
)

APP = SPLUNK.parent
APP_ID = "openai_audit"


def _appinspect() -> str:
    found = shutil.which("splunk-appinspect", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("splunk-appinspect is not installed (it is in the test extra)")
    return found


def test_splunk_appinspect_passes_the_app(tmp_path: Path) -> None:
    package = tmp_path / f"{APP_ID}.tgz"
    with tarfile.open(package, "w:gz") as tar:
        tar.add(APP, arcname=APP_ID)  # the folder name must be the app id
    report = tmp_path / "report.json"
    run = subprocess.run(
        [
            _appinspect(),
            "inspect",
            str(package),
            "--mode",
            "precert",
            "--data-format",
            "json",
            "--output-file",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    [summary] = [r["summary"] for r in json.loads(report.read_text())["reports"]]
    problems = [
        (check["name"], [m["message"][:300] for m in check["messages"]])
        for group in json.loads(report.read_text())["reports"][0]["groups"]
        for check in group["checks"]
        if check["result"] in ("failure", "error", "warning", "future_failure")
    ]
    assert not problems, problems
    assert summary["success"] > 80, summary


def test_app_conf_names_the_app_as_installed() -> None:
    app = _splunk_conf("app.conf")
    assert app["package"]["id"] == app["id"]["name"] == APP_ID
    assert (APP / "metadata" / "default.meta").is_file()


# -- timestamps of the generic sourcetype -----------------------------------------------------

_INGEST = re.compile(
    r'_time=if\(match\(_raw, "(?P<shape>(?:[^"\\]|\\.)*)"\), '
    r'tonumber\(replace\(_raw, "(?P<value>(?:[^"\\]|\\.)*)", "\\1"\)\)(?: / (?P<div>\d+))?, '
    r"_time\)"
)


def _eval_string(text: str) -> str:
    """A Splunk eval string literal's value: \\" is a quote; other escapes reach PCRE."""
    return text.replace('\\"', '"')


def _ingest_time(line: str, expression: str, time: float) -> float:
    """What INGEST_EVAL = _time=if(match(...), tonumber(replace(...)) [/ N], _time) gives."""
    m = _INGEST.fullmatch(expression)
    assert m, f"INGEST_EVAL not of the shape this test reads: {expression}"
    if not re.search(_eval_string(m["shape"]), line):
        return time
    value = float(re.sub(_eval_string(m["value"]), r"\1", line, count=1, flags=re.S))
    return value / int(m["div"] or 1)


@pytest.mark.parametrize("schema", sorted(SOURCETYPES))
def test_the_generic_sourcetype_gets_the_event_time_of_every_schema(schema: str) -> None:
    # Splunk reads the time with openai:audit's settings, then the index-time transforms run
    # in order: the sourcetype is rewritten, and INGEST_EVAL may set _time from the document.
    props = _splunk_conf("props.conf")["openai:audit"]
    transforms = _splunk_conf("transforms.conf")
    chain = [t.strip() for t in props["TRANSFORMS-openai_audit_sourcetype"].split(",")]
    evals = [transforms[name]["INGEST_EVAL"] for name in chain if "INGEST_EVAL" in transforms[name]]
    assert len(evals) == 2
    for effective_at, line in _mapped_lines(schema, 300):
        try:
            time: float = _splunk_time(line, props)
        except AssertionError:
            time = -1.0  # no ECS timestamp: Splunk falls back, INGEST_EVAL must set it
        for expression in evals:
            time = _ingest_time(line, expression, time)
        assert int(time) == effective_at, line[:200]


# -- CIM --------------------------------------------------------------------------------------


def _doc_fields(schema: str) -> set[str]:
    """Every field name Splunk's KV_MODE=json gives our documents (`{}` after a list)."""
    names: set[str] = set()

    def walk(value: object, prefix: str) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, f"{prefix}.{key}" if prefix else key)
        elif isinstance(value, list):
            for inner in value:
                walk(inner, prefix + "{}")
        else:
            names.add(prefix)

    for _, line in _mapped_lines(schema, 400):
        walk(orjson.loads(line), "")
    return names


_FIELD_REF = re.compile(r"'([^']+)'|\b([a-z_]+(?:\.[a-z_]+)+(?:\{\})?)")


@pytest.mark.parametrize("schema", ["ecs", "ocsf"])
def test_cim_aliases_and_evals_read_fields_our_documents_have(schema: str) -> None:
    stanza = _splunk_conf("props.conf")[SOURCETYPES[schema]]
    fields = _doc_fields(schema) | {"class_uid", "status", "activity_name"}
    aliases = [v for k, v in stanza.items() if k.startswith("FIELDALIAS-")]
    assert aliases
    read = set()
    for alias in aliases:
        read |= set(re.findall(r"(\S+) AS \S+", alias))
    for key, value in stanza.items():
        if key.startswith("EVAL-"):
            read |= {a or b for a, b in _FIELD_REF.findall(value)}
    missing = sorted(read - fields)
    assert not missing, missing
    assert {"user", "src", "action"} <= {
        *(m for a in aliases for m in re.findall(r"AS (\S+)", a)),
        *(k.removeprefix("EVAL-") for k in stanza if k.startswith("EVAL-")),
    }


def test_eventtypes_and_tags_feed_the_authentication_and_change_data_models() -> None:
    eventtypes = _splunk_conf("eventtypes.conf")
    tags = _splunk_conf("tags.conf")
    sourcetypes = set(_splunk_conf("props.conf").sections())
    tagged = {}
    for section in tags.sections():
        eventtype = section.removeprefix("eventtype=")
        assert eventtype in eventtypes, section
        tagged[eventtype] = {t for t, v in tags[section].items() if v == "enabled"}
    assert {"authentication"} <= set().union(*tagged.values())
    assert {"change", "account"} <= set().union(*tagged.values())
    for name in eventtypes.sections():
        named = set(re.findall(r'sourcetype="([^"]+)"', eventtypes[name]["search"]))
        assert named and named <= sourcetypes, name


def test_the_input_examples_name_a_schema_sourcetype_for_a_single_schema_input() -> None:
    import configparser

    parser = configparser.RawConfigParser(strict=True, delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((APP / "inputs.conf.example").read_text())
    sourcetypes = {parser[s]["sourcetype"] for s in parser.sections() if "sourcetype" in parser[s]}
    assert sourcetypes <= set(SOURCETYPES.values()) | {"openai:audit"}
    assert parser["tcp-ssl:6514"]["sourcetype"] == SOURCETYPES["ecs"]


def test_the_ecs_saved_searches_search_the_ecs_sourcetype() -> None:
    searches = _splunk_conf("savedsearches.conf")
    assert len(searches.sections()) >= 15
    for name in searches.sections():
        assert 'sourcetype="openai:audit:ecs"' in searches[name]["search"], name
        assert searches[name]["disabled"] == "1"
