"""Reject reasons quote no field value (resumes are personal data) in reports, in etl_rejects
and on the terminal, unless the operator asks with --show-values."""

from __future__ import annotations

import copy
import json

import psycopg

from tests.datagen import bad_cases
from tests.helpers import etl, pg_env

SECRET = "jane.private.person@@nowhere"


def _source(tmp_path):
    """resumes.jsonl: one resume whose email is not an address (a bad_email reject)."""
    base = next(doc for _, doc, case in bad_cases() if case == "user_id_missing")
    doc = copy.deepcopy(base)
    doc.update(_key="bad-email-1", user_id="user_1")
    doc["resume_data"]["contact_info"]["email"] = SECRET
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / "resumes.jsonl").write_text(json.dumps(doc) + "\n")
    return tmp_path / "src"


def _run(schema_db, tmp_path, *extra):
    reports = tmp_path / ("shown" if extra else "hidden")
    env = pg_env(schema_db, tmp_path, reports)
    src = f"jsonl:{_source(tmp_path)}"
    proc = etl("migrate", "-c", "resumes", "--source", src, "-v", *extra, env=env, cwd=tmp_path)
    # the document is a reject: new the first time (exit 1), rejected again the second (exit 0)
    assert proc.returncode == (0 if extra else 1), proc.stderr
    assert "1 rejected by earlier runs too" in proc.stdout if extra else True
    text = proc.stdout + proc.stderr + "".join(p.read_text() for p in reports.glob("*.*"))
    with psycopg.connect(schema_db) as conn:
        (reason,) = conn.execute(
            "select reason from etl_rejects where key = 'bad-email-1' order by id desc limit 1"
        ).fetchone()
    return text, reason


def test_reject_reasons_quote_no_values_unless_show_values(schema_db, tmp_path):
    text, reason = _run(schema_db, tmp_path)
    assert reason.startswith("bad_email: parsed_data.contact_info.email is <a string"), reason
    assert "bad_email" in text and SECRET not in text and SECRET not in reason
    text, reason = _run(schema_db, tmp_path, "--show-values")
    assert SECRET in reason and SECRET in text
