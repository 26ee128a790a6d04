"""One run lifecycle for every command (etl/summary.py, etl/runs.py Run.conclude): how a run
ended is decided in one place, and every command's report carries the same header."""

from __future__ import annotations

import json
from contextlib import nullcontext

import jsonschema
import pytest

from etl.errors import EtlError, Interrupted, PermanentError
from etl.migrate import Migration
from etl.settings import load_settings
from etl.summary import DocSummary, concluded, outcome
from etl.sync.cutover import Cutover
from etl.sync.run import SyncJob
from tests.datagen import generate, write_dump
from tests.helpers import SCHEMA, scalar, settings_for

HEADER = jsonschema.Draft202012Validator({**SCHEMA, **SCHEMA["$defs"]["run_header"]})


def test_outcome_says_how_every_run_ended():
    assert outcome(None) == ("finished", None)
    assert outcome(Interrupted("stopped at tick 7")) == ("interrupted", "stopped at tick 7")
    assert outcome(KeyboardInterrupt()) == ("interrupted", "interrupted by the user")
    assert outcome(PermanentError("no copy to follow")) == ("failed", "no copy to follow")
    assert outcome(ValueError("bad")) == ("failed", "ValueError: bad")


@pytest.mark.parametrize(
    "raised, ended",
    [(None, ("finished", None)), (Interrupted("stop"), ("interrupted", "stop"))],
)
def test_concluded_closes_once_and_raises_again(raised, ended):
    closed = []
    with pytest.raises(EtlError) if raised else nullcontext():
        with concluded(lambda st, err: closed.append((st, err))):
            if raised:
                raise raised
    assert closed == [ended]


def test_a_doc_summary_reads_and_writes_like_its_report():
    doc = DocSummary(run_id="sync-1", command="sync", source="arangodb x")
    doc["verdict"] = "go"
    doc["target"] = "pg y"
    doc.end("failed", "why")
    out = doc.asdict()
    assert out["verdict"] == "go" and doc.get("verdict") == "go" and doc.get("nope") is None
    assert (out["state"], out["error"], out["target"]) == ("failed", "why", "pg y")
    assert doc.row() == out


def test_an_interrupted_migrate_records_why(schema_db, tmp_path):
    """The stop's one line (what to do next) is the run's error, in etl_runs and the report,
    as for sync and fallback (it was None for migrate)."""
    path = tmp_path / "dump"
    write_dump(path, generate(20, seed=5), gzip=False)
    m = Migration(
        settings_for(schema_db, tmp_path),
        source=f"dump:{path}",
        all_=True,
        batch_size=5,
        should_stop=lambda: True,
        retry_wait=lambda rs: 0,
    )
    with pytest.raises(Interrupted) as exc:
        m.run()
    state, error = scalar(schema_db, "select array[state, error] from etl_runs")
    assert state == "interrupted" and error == str(exc.value), (state, error)
    doc = json.loads(m.report_paths["json"].read_text())
    HEADER.validate(doc)
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)  # still the migrate report
    assert doc["state"] == "interrupted" and doc["error"] == str(exc.value)


def test_a_stopped_cutover_is_interrupted_not_failed(schema_db, migrated_env):
    """Ctrl-C during a cutover ends it as every other run: interrupted, no go, its report
    with the common header (it was recorded as failed)."""
    settings = load_settings(None, env=migrated_env(seed=41))
    cut = Cutover(
        settings, confirm_freeze=lambda: True, should_stop=lambda: True, say=lambda s: None
    )
    with pytest.raises(Interrupted):
        cut.run()
    state = scalar(schema_db, "select state from etl_runs where command = 'cutover'")
    assert state == "interrupted"
    paths = cut.job.report_paths
    assert paths is not None
    doc = json.loads(paths["json"].read_text())
    HEADER.validate(doc)
    assert (doc["command"], doc["state"], doc["verdict"]) == ("cutover", "interrupted", "no-go")
    sync = SyncJob(settings)
    out = sync.execute(until_current=True)
    assert out["state"] == "finished"
    assert sync.report_paths is not None
    HEADER.validate(json.loads(sync.report_paths["json"].read_text()))
