"""The counts of a run add up: every document read is exactly one of inserted, updated,
unchanged, rejected or unmapped, on a first run and on a re-run, whoever refused a row; and
`--resume --batch N` goes on in batches of N."""

from __future__ import annotations

import secrets
import signal
import subprocess
import time

import psycopg
import pytest

from etl.load import LoadOutcome
from etl.pipeline import Transformed, batch_counts
from tests.datagen import generate, write_dump, write_jsonl
from tests.helpers import etl, etl_popen, pg_env, run, scalar


def resumes_with_one_postgresql_refuses(n_good: int) -> tuple[dict[str, list[dict]], str]:
    """n_good ordinary resumes and one whose user_id PostgreSQL cannot index: 40 kB that do
    not compress ("index row requires 40024 bytes, maximum size is 8191"). The transform
    accepts it (user_id is text); only the database refuses it."""
    docs = list(generate(n_good + 1, seed=5)["resumes"])
    bad = docs[2]
    bad["user_id"] = secrets.token_hex(20_000)
    return {"resumes": docs}, bad["_key"]


def resume_counts(summary) -> dict:
    (c,) = [c for c in summary.collections if c.collection == "resumes"]
    d = c.asdict()
    return {
        **{k: d["counts"][k] for k in ("read", "inserted", "updated", "unchanged", "rejected")},
        "balanced": d["balanced"],
    }


@pytest.mark.parametrize("batch_size", [100, 2])
def test_a_row_postgresql_refuses_is_one_reject_and_the_counts_balance(
    schema_db, tmp_path, batch_size
):
    data, bad_key = resumes_with_one_postgresql_refuses(5)
    path = write_jsonl(tmp_path / "export", data)

    first = run(
        schema_db, tmp_path, f"jsonl:{path}", collections=["resumes"], batch_size=batch_size
    )
    assert resume_counts(first) == {
        "read": 6,
        "inserted": 5,
        "updated": 0,
        "unchanged": 0,
        "rejected": 1,
        "balanced": True,
    }
    again = run(
        schema_db, tmp_path, f"jsonl:{path}", collections=["resumes"], batch_size=batch_size
    )
    assert resume_counts(again) == {
        "read": 6,
        "inserted": 0,
        "updated": 0,
        "unchanged": 5,
        "rejected": 1,
        "balanced": True,
    }
    # the refused document is kept whole, with the database's reason, once: etl_rejects holds
    # only live rejects (the second run replaced the first run's row)
    rejects = scalar(
        schema_db,
        "select array_agg(distinct stage || ':' || left(reason, 5)) || count(*)::text"
        " from etl_rejects where key = %s",
        bad_key,
    )
    assert rejects == ["load:54000", "1"]
    assert scalar(schema_db, "select count(*) from resume_documents") == 5
    # and the checkpoints say the same as the summaries
    with psycopg.connect(schema_db) as conn:
        rows = conn.execute(
            "select inserted, updated, unchanged, rejected from etl_checkpoints"
            " where collection = 'resumes' order by updated_at"
        ).fetchall()
    assert rows == [(5, 0, 0, 1), (0, 0, 5, 1)]


def test_batch_counts_refuse_an_unbalanced_batch():
    """The balance is checked where the counts are made: a loader outcome that does not
    account for every row stops the batch (a bug), instead of a report that does not add up."""
    from etl.transform import Row

    t = Transformed()
    t.rows["resume"] = [Row("resume", str(i), {}) for i in range(3)]
    assert batch_counts(t, {"resume": LoadOutcome(inserted=2, unchanged=1)}, None)[0].loaded == 3
    with pytest.raises(AssertionError, match="unbalanced"):
        batch_counts(t, {"resume": LoadOutcome(inserted=2, unchanged=1, rejected=[(0, "x")])}, None)


def test_resume_with_batch_goes_on_in_batches_of_the_new_size(schema_db, tmp_path):
    ds = generate(
        120,
        seed=4,
        jobs_per_resume=0,
        optimizations_per_resume=0,
        research_per_job=0,
        other_documents_per_resume=0,
        task_results_per_resume=0,
    )
    path = tmp_path / "dump"
    write_dump(path, ds, gzip=False)
    env = pg_env(schema_db, tmp_path)
    first = etl_popen(
        "migrate", "--all", "--source", f"dump:{path}", "--batch", "7",
        env=env, stdout=subprocess.DEVNULL, text=False,
    )  # fmt: skip
    deadline = time.time() + 60
    while time.time() < deadline:
        if scalar(schema_db, "select count(*) from etl_batches") >= 2:
            break
        time.sleep(0.02)
    first.send_signal(signal.SIGINT)  # stops cleanly after the batch in flight
    assert first.wait(60) == 130, first.stderr.read()
    before = scalar(schema_db, "select count(*) from etl_batches")
    assert before >= 2 and scalar(schema_db, "select state from etl_runs") == "interrupted"

    resumed = etl("migrate", "--resume", "--batch", "25", env=env, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    with psycopg.connect(schema_db) as conn:
        sizes = [
            d
            for (d,) in conn.execute(
                "select docs from etl_batches where collection = 'resumes' order by seq"
            )
        ]
        batch_size = conn.execute("select options ->> 'batch_size' from etl_runs").fetchone()[0]
    assert sizes[:before] == [7] * before
    rest = sizes[before:]
    assert rest[:-1] == [25] * (len(rest) - 1) and 0 < rest[-1] <= 25, sizes
    assert sum(sizes) == ds.counts["resumes"] == 120
    assert scalar(schema_db, "select count(*) from resume_documents") == 120
    # the run's record says what it uses now: a later --resume without --batch goes on with it
    assert batch_size == "25"
