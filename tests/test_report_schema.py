"""The JSON reports follow docs/report.schema.json: migrate, dry run and reconcile, as written
by real runs, including a failed one. A report that drifts from its documented schema fails here."""

import json
from pathlib import Path

import jsonschema
import pytest

from etl.errors import EtlError
from etl.migrate import Migration
from etl.reconcile import Reconciliation
from tests.helpers import SCHEMA, settings_for, validate


def test_report_schema_itself_is_valid():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_report_schema_matches_migrate_dry_run_and_reconcile(schema_db, tmp_path, dump_of):
    path = dump_of(30, seed=2, bad=True, gzip=True)
    settings = settings_for(schema_db, tmp_path)
    dry = Migration(settings, source=f"dump:{path}", all_=True, dry_run=True)
    dry.run()
    assert validate(dry.report_paths["json"])["dry_run"] is True
    real = Migration(settings, source=f"dump:{path}", all_=True)
    real.run()
    doc = validate(real.report_paths["json"])
    assert {c["collection"] for c in doc["collections"]} >= {
        "resumes",
        "jobs",
        "documents",
        "job_research",
    }
    rec = Reconciliation(settings, all_=True, source=f"dump:{path}")
    rec.run()
    assert validate(rec.report_paths["json"])["has_differences"] is False


def test_report_schema_rejects_a_drifted_report(schema_db, tmp_path, dump_of):
    path = dump_of(5, seed=2, gzip=True)
    settings = settings_for(schema_db, tmp_path)
    m = Migration(settings, source=f"dump:{path}", all_=True)
    m.run()
    doc = json.loads(Path(m.report_paths["json"]).read_text())
    del doc["collections"][0]["counts"]["rejected"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SCHEMA).validate(doc)


def test_report_schema_failed_run_still_reports(schema_db, tmp_path, dump_of):
    path = dump_of(5, seed=2, gzip=True)
    settings = settings_for(schema_db, tmp_path)
    m = Migration(
        settings,
        source=f"dump:{path}",
        collections=["resumes"],
        batch_size=2,
        should_stop=lambda: True,
    )
    with pytest.raises(EtlError):
        m.run()
    doc = validate(m.report_paths["json"])
    assert doc["state"] == "interrupted"
    resumes = doc["collections"][0]
    assert resumes["status"] == "interrupted" and resumes["balanced"] is None  # not "ok"
