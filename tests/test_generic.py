"""Generic tables (issue #17): etl discover -> apply-schema --mapping -> migrate -> reconcile on
dumps of every layout and on the live test server; every non-system collection's table holds
exactly the live documents, rejects are kept whole."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from etl.generic.apply import apply_mapping
from etl.generic.discover import discover, open_source
from etl.generic.render import render
from etl.mapping import load_mapping
from etl.migrate import Migration
from etl.reconcile.run import Reconciliation
from etl.settings import load_settings
from etl.transform import row_id
from tests import generic_dumps as shop
from tests.helpers import error_lines, etl, pg_env, process_env, validate

SYSTEM = ("_key", "_id", "_rev", "_from", "_to")


def env_for(dsn: str, tmp_path: Path, mapping: Path | None = None, **more) -> dict:
    env = process_env(pg_env(dsn, tmp_path, **more))
    if mapping is not None:
        env["ETL_MAPPING"] = str(mapping)
    return env


def discover_to(source_spec: str, out: Path, settings=None, **kw) -> Path:
    src = open_source(source_spec, settings)
    try:
        out.write_text(render(discover(src, **kw)))
    finally:
        src.close()
    return out


def table_rows(dsn: str, table: str) -> dict[str, tuple]:
    with psycopg.connect(dsn) as conn:
        cols = "id::text, data, metadata, " + (
            "from_ref, to_ref, from_id::text, to_id::text"
            if conn.execute(
                "select exists (select 1 from pg_attribute where attrelid = %s::regclass"
                " and attname = 'from_ref')",
                (table,),
            ).fetchone()[0]
            else "null, null, null, null"
        )
        return {r[0]: r[1:] for r in conn.execute(f"select key, {cols} from {table}")}


def check_tables(dsn: str, mapping, expected: dict[str, dict[str, dict]], live=False) -> None:
    """Each collection's table holds exactly its live documents (minus the one with U+0000,
    which is a reject kept whole). A server writes its own _rev on import (live)."""
    for name, docs in expected.items():
        if name.startswith("_"):
            assert mapping.for_collection(name) is None
            continue
        (target,) = mapping.for_collection(name).targets()
        rows = table_rows(dsn, target.table)
        want = {k: d for k, d in docs.items() if k != "nul"}
        assert set(rows) == set(want), name
        for key, doc in want.items():
            rid, data, md, f, t, fid, tid = rows[key]
            assert rid == row_id(name, key)
            assert data == {k: v for k, v in doc.items() if k not in SYSTEM}, (name, key)
            rev = md["arango"]["_rev"] if live else doc["_rev"]
            assert md["arango"] == {
                "collection": name, "_key": key, "_id": doc["_id"], "_rev": rev
            }  # fmt: skip
            if "_from" in doc:
                assert (f, t) == (doc["_from"], doc["_to"])
                assert (fid, tid) == (row_id(*f.split("/")), row_id(*t.split("/")))
    with psycopg.connect(dsn) as conn:
        (kept,) = conn.execute(
            "select document from etl_rejects where collection = 'users' and key = 'nul'"
        ).fetchone()
    kept = json.loads(kept)
    if live:
        kept.pop("_rev")
    assert kept == {k: v for k, v in expected["users"]["nul"].items() if not live or k != "_rev"}


def migrate_and_reconcile(dsn, tmp_path, mapping_file, source, workers: int = 1):
    settings = load_settings(None, env=env_for(dsn, tmp_path, mapping_file))
    mapping = load_mapping(mapping_file)
    apply_mapping(dsn, mapping.generic_targets(), str(mapping_file))
    if workers > 1:
        from etl.parallel.coordinator import ParallelMigration

        m = Migration(settings, all_=True, source=source, batch_size=17)
        assert ParallelMigration(m, workers=workers, lease_seconds=30).run().state == "finished"
    else:
        Migration(settings, all_=True, source=source, batch_size=17).run()
    summary = Reconciliation(settings, all_=True, source=source).run()
    statuses = {c.collection: c.status for c in summary.collections}
    assert all(s == "match" for s in statuses.values()), statuses
    return mapping


@pytest.mark.parametrize("layout", shop.LAYOUTS)
def test_every_dump_layout_discover_apply_migrate_reconcile(layout, schema_db, tmp_path):
    dump = shop.write(tmp_path / "dump", layout)
    m = discover_to(f"dump:{dump}", tmp_path / "m.toml", sample=1000)
    mapping = migrate_and_reconcile(schema_db, tmp_path, m, f"dump:{dump}")
    check_tables(schema_db, mapping, shop.live(layout))
    # the 2.x removals and repeats: u3 removed, u4 renamed, u5 removed and written again
    if layout == "2.8":
        users = table_rows(schema_db, "arango.users")
        assert "u3" not in users and users["u4"][1]["name"] == "User 4 renamed"
        assert users["u5"][1]["name"] == "User 5 back"


def test_live_server_discover_apply_migrate_reconcile(schema_db, tmp_path, arango_server):
    from tests.fakearango.fixtures import ROOT_PASSWORD

    shop.seed_server(arango_server)
    env = env_for(
        schema_db, tmp_path, None, ETL_ARANGO_URL=arango_server.url, ETL_ARANGO_DB=shop.DATABASE,
        ETL_ARANGO_USER="root", ETL_ARANGO_PASSWORD=ROOT_PASSWORD,
    )  # fmt: skip
    m = discover_to("arangodb", tmp_path / "m.toml", load_settings(None, env=env), sample=50)
    text = m.read_text()
    assert "Graph social:" in text and 'from_collections = ["users"]' in text
    mapping = load_mapping(m)
    users = mapping.for_collection("users").generic
    assert {(i.fields, i.kind, i.unique) for i in users.indexes} >= {
        (("email",), "btree", True), (("bio",), "fulltext", False),
        (("address.city",), "btree", False),
    }  # fmt: skip
    assert any("geo index" in n for n in users.not_translated)
    assert any("ttl index" in n for n in users.not_translated)
    env["ETL_MAPPING"] = str(m)
    settings = load_settings(None, env=env)
    apply_mapping(schema_db, mapping.generic_targets(), str(m))
    Migration(settings, all_=True, source="arangodb", batch_size=13).run()
    summary = Reconciliation(settings, all_=True, source="arangodb").run()
    assert {c.status for c in summary.collections} == {"match"}
    check_tables(schema_db, mapping, shop.live("3.12"), live=True)


def test_discovered_mapping_reads_as_a_reviewer_needs(tmp_path):
    dump = shop.write(tmp_path / "dump", "3.10")
    text = discover_to(f"dump:{dump}", tmp_path / "m.toml").read_text()
    m = load_mapping(tmp_path / "m.toml")
    assert set(m.collections) == {"users", "products", "Order-Items", "empty", "knows"}
    assert (
        "System collections not migrated (etl discover --include-system adds them): _graphs" in text
    )
    items = m.for_collection("Order-Items").generic
    assert items.table_name.startswith("order_items_") and len(items.table_name) <= 63
    users = m.for_collection("users").generic
    typed = {c.attribute: c.type for c in users.typed}
    assert typed == {
        "name": "text", "email": "text", "age": "bigint", "score": "numeric",
        "active": "boolean", "joined": "timestamptz", "bio": "text", "expires": "bigint",
    }  # fmt: skip
    assert "nick" not in typed and "tags" not in typed  # rare; an array
    assert "#   nick" in text and "in too few documents" in text
    knows = m.for_collection("knows").generic
    assert knows.edge and knows.from_collections == ("users",)
    assert [(i.fields, i.unique) for i in knows.indexes] == [(("_from", "since"), False)]
    assert m.for_collection("empty").generic.typed == ()
    assert m.order[-1] == "knows"  # edges after documents
    with_system = tmp_path / "s.toml"
    discover_to(f"dump:{dump}", with_system, include_system=True)
    assert "_graphs" in load_mapping(with_system).collections


def test_unchanged_rows_are_untouched_and_workers_load_the_same(schema_db, tmp_path):
    dump = shop.write(tmp_path / "dump", "3.12")
    m = discover_to(f"dump:{dump}", tmp_path / "m.toml")
    mapping = migrate_and_reconcile(schema_db, tmp_path, m, f"dump:{dump}", workers=2)
    check_tables(schema_db, mapping, shop.live("3.12"))
    with psycopg.connect(schema_db) as conn:
        before = conn.execute("select key, xmin::text from arango.users").fetchall()
    settings = load_settings(None, env=env_for(schema_db, tmp_path, m))
    summary = Migration(settings, all_=True, source=f"dump:{dump}").run()
    users = next(c for c in summary.collections if c.collection == "users")
    assert (users.counts.inserted, users.counts.updated) == (0, 0)
    assert users.counts.unchanged == 61 - 1 and users.counts.rejected == 1
    with psycopg.connect(schema_db) as conn:
        assert conn.execute("select key, xmin::text from arango.users").fetchall() == before


GHOST = {"key": "ghost", "end": "_from", "ref": "ghosts/g1", "problem": "unknown_collection"}
NOBODY = {"key": "dangling", "end": "_to", "ref": "users/nobody", "problem": "dangling"}


def test_dangling_edges_are_loaded_counted_and_listed(schema_db, tmp_path):
    dump = shop.write(tmp_path / "dump", "3.12")
    m = discover_to(f"dump:{dump}", tmp_path / "m.toml")
    assert "# No foreign keys on edge tables" in m.read_text()  # and why
    mapping = migrate_and_reconcile(schema_db, tmp_path, m, f"dump:{dump}")
    reports = sorted((tmp_path / "reports").glob("*.json"), key=lambda p: p.stat().st_mtime)
    migrate, reconcile = (validate(p) for p in reports[-2:])  # docs/report.schema.json
    for report in (migrate, reconcile):
        (knows,) = [c for c in report["collections"] if c["collection"] == "knows"]
        assert knows["dangling_references"] == {"to_id": 1}
        assert knows["unknown_end_collections"] == {"ghosts": 1}
        assert knows["dangling_edges"] == [NOBODY, GHOST] or knows["dangling_edges"] == [
            GHOST, NOBODY
        ]  # fmt: skip
        assert knows["counts"].get("dangling") == (1 if report is migrate else None)
    assert reconcile["has_differences"] is False
    md = reports[-1].with_suffix(".md").read_text()
    assert "`dangling` _to `users/nobody` (dangling)" in md and "`ghosts` (1)" in md
    rows = table_rows(schema_db, mapping.for_collection("knows").generic.table)
    assert rows["dangling"][3:5] == ("users/u1", "users/nobody")  # loaded as it is
    assert rows["ghost"][5] == row_id("ghosts", "g1")
    with psycopg.connect(schema_db) as conn:
        assert conn.execute(
            "select dangling from etl_checkpoints where collection = 'knows'"
            " order by updated_at desc limit 1"
        ).fetchone() == (1,)
        fks = "select count(*) from pg_constraint where contype = 'f' and connamespace = 'arango'::regnamespace"
        assert conn.execute(fks).fetchone() == (0,)
    # workers: the edges wait for the document tables, the count is the same
    settings = load_settings(None, env=env_for(schema_db, tmp_path, m))
    from etl.parallel.coordinator import ParallelMigration

    m2 = Migration(settings, all_=True, source=f"dump:{dump}")
    run = ParallelMigration(m2, workers=2, lease_seconds=30).run()
    (knows,) = [c for c in run.collections if c.collection == "knows"]
    assert knows.counts.dangling == 1


def test_reconcile_of_a_generic_table_writes_its_audit_entries(schema_db, tmp_path):
    dump = shop.write(tmp_path / "dump", "3.12")
    m = discover_to(f"dump:{dump}", tmp_path / "m.toml")
    migrate_and_reconcile(schema_db, tmp_path, m, f"dump:{dump}")
    with psycopg.connect(schema_db) as conn:
        conn.execute("update arango.users set data = data || '{\"name\": \"x\"}' where key = 'u1'")
        conn.execute("delete from arango.users where key = 'u2'")
    settings = load_settings(None, env=env_for(schema_db, tmp_path, m))
    summary = Reconciliation(settings, collections=["users"], source=f"dump:{dump}").run()
    assert summary.collections[0].status == "differences"
    with psycopg.connect(schema_db) as conn:
        rows = conn.execute(
            "select document_type, document_id::text, changes from document_audit_log"
            " where action = 'reconcile' and run_id = %s order by 2",
            (summary.run_id,),
        ).fetchall()
    assert {(t, i) for t, i, _ in rows} == {
        ("arango.users", "00000000-0000-0000-0000-000000000000"),
        ("arango.users", row_id("users", "u1")),
        ("arango.users", row_id("users", "u2")),
    }
    found = {c["key"]: c for _, i, c in rows if "finding" in c}
    assert found["u1"]["finding"] == "differing" and found["u1"]["fields"] == ["data"]
    assert found["u2"]["finding"] == "missing" and found["u2"]["table"] == "arango.users"
    (total,) = [c for _, _, c in rows if c.get("summary")]
    assert (total["missing"], total["differing"], total["status"]) == (1, 1, "differences")


def test_timestamptz_column_does_not_depend_on_the_session(schema_db, tmp_path):
    """A text -> timestamptz cast reads TimeZone: the generated column's helper pins UTC, so
    every session stores the same instant, and a value that is no timestamp is NULL."""
    (tmp_path / "m.toml").write_text(
        'mapping_version = "t"\n[collections.ev]\nkind = "generic"\ntable = "ev"\n'
        '[collections.ev.typed]\nat = { path = "at", type = "timestamptz" }\n'
        'n = { path = "n", type = "bigint" }\n'
    )
    mapping = load_mapping(tmp_path / "m.toml")
    apply_mapping(schema_db, mapping.generic_targets(), "m.toml")
    with psycopg.connect(schema_db) as conn:
        conn.execute("set timezone = 'America/New_York'; set datestyle = 'SQL, DMY'")
        for key, at, n in [("a", "2024-03-01T10:00:00", 1), ("b", "2024-03-01T10:00:00+02:00", 2**70),
                           ("c", "not a date", 1.5), ("d", "2024-02-30", "7")]:  # fmt: skip
            conn.execute(
                "insert into arango.ev (id, key, data, metadata) values (gen_random_uuid(), %s,"
                " jsonb_build_object('at', %s::text, 'n', %s::jsonb), '{}')",
                (key, at, json.dumps(n)),
            )
        conn.execute("set timezone = 'UTC'; set datestyle = 'ISO'")
        got = {k: (a, n) for k, a, n in conn.execute("select key, at::text, n from arango.ev")}
        assert got["a"] == ("2024-03-01 10:00:00+00", 1)
        assert got["b"] == ("2024-03-01 08:00:00+00", None)  # beyond bigint: NULL, data keeps it
        assert got["c"] == (None, None) and got["d"] == (None, None)
        vol = conn.execute(
            "select provolatile from pg_proc where proname = 'etl_jsonb_timestamptz'"
        ).fetchone()[0]
        assert vol == "i"


def test_cli_flow_and_operator_errors(schema_db, tmp_path):
    dump = shop.write(tmp_path / "dump", "3.8")
    env = env_for(schema_db, tmp_path)
    m = tmp_path / "m.toml"
    assert etl("discover", "--source", f"dump:{dump}", "--out", str(m), env=env).returncode == 0
    again = etl("discover", "--source", f"dump:{dump}", "--out", str(m), env=env)
    assert again.returncode == 2 and "exists" in again.stderr
    # migrate before the mapping's tables exist: one line, exit 2
    proc = etl("migrate", "--all", "--mapping", str(m), "--source", f"dump:{dump}", env=env)
    assert proc.returncode == 2 and len(error_lines(proc.stderr)) == 1, proc.stderr
    assert "apply-schema --mapping" in proc.stderr
    assert etl("apply-schema", "--mapping", str(m), env=env).returncode == 0
    second = etl("apply-schema", "--mapping", str(m), env=env)
    assert second.returncode == 0 and "generic tables unchanged" in second.stdout
    proc = etl("migrate", "--all", "--mapping", str(m), "--source", f"dump:{dump}", env=env)
    assert proc.returncode == 1, proc.stderr  # finished with a reject (the U+0000 document)
    proc = etl("reconcile", "--all", "--mapping", str(m), "--source", f"dump:{dump}", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # adding a typed column to a table with rows: applied
    text = m.read_text().replace(
        "[collections.users.typed]\n",
        '[collections.users.typed]\ncity2 = { path = "nick", type = "text" }\n',
    )
    m.write_text(text)
    add = etl("apply-schema", "--mapping", str(m), env=env)
    assert add.returncode == 0 and "add columns or indexes to: arango.users" in add.stdout
    # changing one: refused in one line
    m.write_text(
        text.replace(
            'city2 = { path = "nick", type = "text" }',
            'city2 = { path = "nick", type = "numeric" }',
        )
    )
    bad = etl("apply-schema", "--mapping", str(m), env=env)
    assert bad.returncode == 2 and len(error_lines(bad.stderr)) == 1, bad.stderr
    assert "changes typed column city2 of table arango.users, which holds rows" in bad.stderr
    # a bad mapping and an unreadable source: one line, exit 2
    (tmp_path / "bad.toml").write_text('mapping_version = "x"\n[collections.a]\nkind = "generic"\n')
    bad = etl("apply-schema", "--mapping", str(tmp_path / "bad.toml"), env=env)
    assert bad.returncode == 2 and "collections.a.table" in bad.stderr
    gone = etl(
        "discover",
        "--source",
        f"dump:{tmp_path / 'nowhere'}",
        "--out",
        str(tmp_path / "x.toml"),
        env=env,
    )
    assert gone.returncode == 2 and len(error_lines(gone.stderr)) == 1, gone.stderr
