"""DumpSource against the arangodump reader spec's checklist (numbers in the test names)."""

from __future__ import annotations

import gzip
import hashlib
import logging
import shutil
import tracemalloc
from pathlib import Path

import pytest

from etl.errors import PermanentError
from etl.sources import open_source
from etl.sources.base import Source
from etl.sources.dump import DumpSource
from etl.sources.jsonl import JsonlSource
from tests.datagen import encode, generate, write_dump, write_jsonl

CASES = Path(__file__).parent / "cases" / "dumps"


def H(name: str) -> str:
    return hashlib.md5(name.encode()).hexdigest()


def read_all(src, collection: str, batch_size: int = 1000, after: str | None = None) -> list[dict]:
    return [d for b in src.batches(collection, batch_size, after) for d in b.docs]


def keys(src, collection: str, **kw) -> list[str]:
    return [d["_key"] for d in read_all(src, collection, **kw)]


def make_dump(
    tmp_path: Path,
    data: bytes | str,
    *,
    name: str = "c",
    ctype: int = 2,
    fname: str | None = None,
    encryption: str | None = "none",
    dump_json: str | None = None,
) -> Path:
    """A one-collection dump with the given data file content (bytes are written as is)."""
    d = tmp_path / "dump"
    d.mkdir(parents=True, exist_ok=True)
    if encryption is not None:
        (d / "ENCRYPTION").write_text(encryption)
    (d / "dump.json").write_text(
        dump_json or '{"database":"db","lastTickAtDumpStart":"1","useEnvelope":false}'
    )
    (d / f"{name}_{H(name)}.structure.json").write_text(
        f'{{"indexes":[],"parameters":{{"name":"{name}","type":{ctype},"id":"9","isSystem":false}}}}'
    )
    if data is not None:
        (d / (fname or f"{name}_{H(name)}.data.json")).write_bytes(
            data.encode() if isinstance(data, str) else data
        )
    return d


# ---------------------------------------------------------------------------- 1. ENCRYPTION


def test_01_encrypted_dump_is_refused_before_reading_anything():
    with pytest.raises(PermanentError) as e:
        DumpSource(CASES / "encrypted")
    msg = str(e.value)
    assert "is encrypted (aes-256-ctr); this tool cannot decrypt it" in msg
    assert (
        "arangorestore --encryption.keyfile into a scratch ArangoDB and re-dump without a key"
        in msg
    )


def test_01_encryption_none_without_newline_and_missing_file(tmp_path):
    assert (CASES / "v311_gzip" / "ENCRYPTION").read_bytes() == b"none"
    d = make_dump(tmp_path, '{"_key":"a","_id":"c/a","_rev":"_x"}\n', encryption=None)
    assert not (d / "ENCRYPTION").exists()
    assert keys(DumpSource(d), "c") == ["a"]
    (d / "ENCRYPTION").write_text("none\n")  # trimmed, as arangorestore does
    assert keys(DumpSource(d), "c") == ["a"]


def test_01_encrypted_data_without_encryption_file_is_reported(tmp_path):
    d = make_dump(tmp_path, bytes(range(100, 160)), encryption=None)
    src = DumpSource(d)
    with pytest.raises(PermanentError, match="unreadable, possibly encrypted"):
        src.collections()


def test_01_encrypted_metadata_without_encryption_file(tmp_path):
    d = make_dump(tmp_path, "", encryption=None)
    (d / "dump.json").write_bytes(b"\x8f\x01garbage")
    with pytest.raises(PermanentError, match="possibly encrypted"):
        DumpSource(d)


# ---------------------------------------------------------------------------- 2. dump.json


def test_02_dump_json_unknown_keys_ignored_and_tick_kept_as_string():
    src = DumpSource(CASES / "v38_envelope")
    assert src.meta["lastTickAtDumpStart"] == "1790012345"
    assert src.meta["useEnvelope"] is True and "futureKey" in src.meta
    assert src.database == "atspro"
    assert "v38_envelope" in src.description


def test_02_dump_json_without_use_envelope_or_properties(tmp_path):
    d = make_dump(
        tmp_path,
        '{"type":2300,"data":{"_key":"a","_id":"c/a","_rev":"_x"}}\n',
        dump_json='{"database":"db","lastTickAtDumpStart":"5"}',
    )
    src = DumpSource(d)
    assert src.database == "db" and keys(src, "c") == [
        "a"
    ]  # envelopes found per line, not via useEnvelope
    (d / "dump.json").unlink()  # hand-made dump without dump.json
    assert keys(DumpSource(d), "c") == ["a"]


# ---------------------------------------------------------------------------- 3-5. structure and data files


def test_03_name_and_type_only_from_parameters_legacy_indexes(tmp_path):
    src = DumpSource(CASES / "split_files")  # plain structure name, indexes inside parameters
    assert [(c.name, c.type, c.count) for c in src.collections()] == [("resumes", "document", 5)]
    # extended names (3.11+): the collection id in place of the name; H stays the MD5 of the name
    d = tmp_path / "ext"
    d.mkdir()
    (d / "ENCRYPTION").write_text("none")
    (d / f"4711_{H('Lebensläufe')}.structure.json").write_text(
        '{"indexes":[],"parameters":{"name":"Lebensläufe","type":3,"id":"4711"}}'
    )
    (d / f"4711_{H('Lebensläufe')}.data.json").write_text(
        '{"_key":"x","_id":"4711/x","_rev":"_r","_from":"a/1","_to":"b/2"}\n'
    )
    src = DumpSource(d)
    assert src.collections()[0].name == "Lebensläufe" and src.collections()[0].type == "edge"
    assert keys(src, "Lebensläufe") == ["x"]


def test_03_missing_or_bad_parameters(tmp_path):
    d = make_dump(tmp_path, "")
    (d / f"c_{H('c')}.structure.json").write_text('{"parameters":{"name":"c","type":7}}')
    with pytest.raises(PermanentError, match="parameters.type"):
        DumpSource(d)
    (d / f"c_{H('c')}.structure.json").write_text('{"indexes":[]}')
    with pytest.raises(PermanentError, match="parameters.name"):
        DumpSource(d)


def test_04_hashed_and_plain_structure_names():
    assert {c.name for c in DumpSource(CASES / "v38_envelope").collections()} == {
        "resumes",
        "job_research",
    }
    assert {c.name for c in DumpSource(CASES / "split_files").collections()} == {"resumes"}


def test_04_system_collections_views_and_unknown_files_skipped():
    src = DumpSource(CASES / "v38_envelope")
    assert "_apps" not in {c.name for c in src.collections()}
    with pytest.raises(PermanentError, match="job_research, resumes"):
        src.collection("_apps")
    assert len(DumpSource(CASES / "v38_envelope", include_system=True).collections()) == 3


@pytest.mark.parametrize(
    "present,chosen",
    [
        (["c_H.data.json", "c_H.data.json.gz.x", "c.data.json"], "c_H.data.json"),
        (["c_H.data.json.gz", "c.data.json.gz.x", "c.data.json"], "c_H.data.json.gz"),
        (["c.data.json.gz", "c_H.0.data.json.gz", "c.data.json.x"], "c.data.json.gz"),
        (["c_H.0.data.json.gz", "c_H.0.data.json.x", "c.data.json"], "c_H.0.data.json.gz"),
        (["c_H.0.data.json", "c.data.json"], "c_H.0.data.json"),
        (["c.data.json"], "c.data.json"),
    ],
)
def test_05_data_file_lookup_order(tmp_path, present, chosen):
    d = make_dump(tmp_path, None)
    for f in present:
        f = f.replace("_H", "_" + H("c"))
        (d / f).write_text(f'{{"_key":"{f}","_id":"c/1","_rev":"_r"}}\n')
    assert keys(DumpSource(d), "c") == [chosen.replace("_H", "_" + H("c"))]


def test_05_split_files_in_order_until_a_gap():
    src = DumpSource(CASES / "split_files")
    assert keys(src, "resumes", batch_size=2) == [
        "r1",
        "r2",
        "r3",
        "r4",
        "r5",
    ]  # .4. after the gap unread
    batches = list(src.batches("resumes", 2))
    assert [b.position for b in batches] == ["2", "4", "5"]
    assert keys(src, "resumes", after="3") == ["r4", "r5"]
    assert src.remaining("resumes", "2") == 3


# ---------------------------------------------------------------------------- 6. gzip


def test_06_gzip_multi_member_and_magic_bytes(tmp_path):
    src = DumpSource(CASES / "v311_gzip")
    docs = read_all(src, "jobs")
    assert [d["_key"] for d in docs] == ["2001", "2002", "2003"]  # 2 members
    assert docs[0]["big"] == 9007199254740993 and docs[0]["price"] == 19.90
    assert docs[1]["note"] == "Böb / \U0001f600"
    # detected by magic bytes, not the name: gzip in a .data.json, plain text in a .data.json.gz
    d = make_dump(tmp_path, gzip.compress(b'{"_key":"z","_id":"c/z","_rev":"_r"}\n'))
    assert keys(DumpSource(d), "c") == ["z"]
    d2 = make_dump(
        tmp_path / "2", '{"_key":"p","_id":"c/p","_rev":"_r"}\n', fname=f"c_{H('c')}.data.json.gz"
    )
    assert keys(DumpSource(d2), "c") == ["p"]


def test_06_truncated_gzip(tmp_path, caplog):
    lines = b"".join(
        b'{"_key":"%d","_id":"c/%d","_rev":"_r","pad":"%s"}\n' % (i, i, b"x" * (i % 50))
        for i in range(2000)
    )
    blob = gzip.compress(lines)
    d = make_dump(tmp_path, blob[: len(blob) // 2], fname=f"c_{H('c')}.data.json.gz")
    with pytest.raises(PermanentError, match=r"truncated.*byte offset \d+.*after \d+ good records"):
        DumpSource(d).collections()
    caplog.set_level(logging.WARNING, "etl.sources.dump")
    src = DumpSource(d, allow_truncated=True)
    got = keys(src, "c")
    assert 0 < len(got) < 2000 and got == [str(i) for i in range(len(got))]
    assert src.collection("c").count == len(got)
    assert any("truncated" in r.message for r in caplog.records)
    assert any("truncated" in w for w in next(src.batches("c", 10)).warnings)


def test_06_corrupt_gzip(tmp_path):
    blob = bytearray(gzip.compress(b'{"_key":"a","_id":"c/a","_rev":"_r"}\n' * 100))
    blob[15:25] = b"\xff" * 10
    d = make_dump(tmp_path, bytes(blob))
    with pytest.raises(PermanentError):
        DumpSource(d).collections()


# ---------------------------------------------------------------------------- 7-10. lines


def test_07_08_09_envelopes_plain_lines_removals_duplicates(caplog):
    caplog.set_level(logging.WARNING, "etl.sources.dump")
    src = DumpSource(CASES / "v38_envelope")
    info = src.collection("resumes")
    assert info.count == 4  # 1001 (last wins), 1003 (2301), 1005 (plain line), 1006 (re-created)
    docs = read_all(src, "resumes")
    assert [d["_key"] for d in docs] == ["1003", "1005", "1001", "1006"]
    by_key = {d["_key"]: d for d in docs}
    assert by_key["1001"]["resume_data"]["summary"] == "second version wins"
    assert by_key["1006"]["note"] == "re-created after its removal"
    assert (
        "1002" not in by_key and "1004" not in by_key
    )  # 2302 with data._key and with top-level key
    assert set(by_key["1003"]) == {
        "_key",
        "_id",
        "_rev",
        "user_id",
        "content",
    }  # envelope keys not leaked
    warned = " ".join(r.message for r in caplog.records)
    assert "'1001'" in warned and "'1006'" in warned and "last" in warned
    assert "'1002'" not in warned  # a removal is not a duplicate
    ws = [w for b in src.batches("resumes", 2) for w in b.warnings]
    assert any("1001" in w for w in ws)


def test_09_resume_at_every_record_position_with_removals_and_duplicates():
    src = DumpSource(CASES / "v38_envelope")
    full = keys(src, "resumes")
    records = 11
    seen_positions = set()
    for batch_size in (1, 2, 3):
        for b in src.batches("resumes", batch_size):
            seen_positions.add(int(b.position))
            assert len({d["_key"] for d in b.docs}) == len(b.docs)
    for pos in range(records + 1):
        rest = keys(src, "resumes", after=str(pos), batch_size=2)
        assert src.remaining("resumes", str(pos)) == len(rest)
        assert rest == full[len(full) - len(rest) :]  # a suffix of the full read
    assert src.remaining("resumes") == 4 and src.remaining("resumes", "11") == 0
    with pytest.raises(PermanentError, match="outside"):
        src.remaining("resumes", "12")
    with pytest.raises(PermanentError, match="not a record count"):
        list(src.batches("resumes", 2, after="r1001"))


def test_07_unknown_marker_and_shapeless_lines(tmp_path):
    d = make_dump(
        tmp_path, '{"_key":"a","_id":"c/a","_rev":"_r"}\n{"type":2400,"data":{"_key":"b"}}\n'
    )
    with pytest.raises(PermanentError, match="line 2.*unknown marker type 2400"):
        DumpSource(d).collections()
    d = make_dump(tmp_path / "2", '{"_key":"a","_id":"c/a","_rev":"_r"}\n{"name":"no key"}\n')
    with pytest.raises(PermanentError, match="line 2.*neither a document"):
        DumpSource(d).collections()
    d = make_dump(
        tmp_path / "3", '{"_key":"a","_id":"c/a","_rev":"_r"}\n{"_key":"b",\n{"_key":"c"}\n'
    )
    with pytest.raises(PermanentError, match=r"line 2 \(byte offset 37\): invalid JSON"):
        DumpSource(d).collections()


def test_10_edges_id_not_trusted_rev_opaque():
    src = DumpSource(CASES / "v38_envelope")
    assert src.collection("job_research").type == "edge"
    edges = read_all(src, "job_research")
    assert [(e["_from"], e["_to"]) for e in edges] == [
        ("jobs/2001", "documents/3001"),
        ("jobs/2002", "documents/3002"),
    ]
    assert edges[1]["_id"] == "WRONG/e2"  # passed through untouched; the name comes from parameters
    assert all(isinstance(e["_rev"], str) for e in edges)


def test_11_repeated_attribute_name_first_value_kept_with_a_warning(tmp_path, caplog):
    # arangodump-format.md item 11: the first value, as arangorestore
    # --cleanup-duplicate-attributes keeps it, and a warning naming the key and the attribute
    d = make_dump(
        tmp_path,
        '{"_key":"a","_id":"c/a","_rev":"_r","x":1,"x":2}\n'
        '{"_key":"b","_id":"c/b","_rev":"_r","n":{"y":"first","y":"second"},"u":"http:\\/\\/x"}\n'
        '{"_key":"c","_id":"c/c","_rev":"_r","u":"http:\\/\\/x","f":1.5}\n'
        '{"_key":"d","_key":"e","_id":"c/d","_rev":"_r"}\n',
    )
    caplog.set_level(logging.WARNING, "etl.sources.dump")
    src = DumpSource(d)
    docs = {doc["_key"]: doc for doc in read_all(src, "c")}
    assert sorted(docs) == ["a", "b", "c", "d"]
    assert src.collection("c").count == 4
    assert docs["a"]["x"] == 1
    assert docs["b"]["n"] == {"y": "first"} and docs["b"]["u"] == "http://x"
    assert docs["c"] == {"_key": "c", "_id": "c/c", "_rev": "_r", "u": "http://x", "f": 1.5}
    warned = [r.message for r in caplog.records if "repeats the attribute" in r.message]
    assert len(warned) == 3, warned
    assert any("'a'" in m and " x:" in m for m in warned)
    assert any("'b'" in m and " y:" in m for m in warned)
    assert any("'d'" in m and " _key:" in m for m in warned)
    batch_warnings = [w for b in src.batches("c", 10) for w in b.warnings]
    assert sum("repeats the attribute" in w for w in batch_warnings) == 3


def test_11_a_jsonl_export_keeps_the_last_value_as_arangodb_does(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"_key":"a","x":1,"x":2}\n')
    assert read_all(JsonlSource(p), "c")[0]["x"] == 2


# ---------------------------------------------------------------------------- 12-15. robustness


def test_12_truncated_last_line_error_then_flag(caplog):
    with pytest.raises(PermanentError) as e:
        DumpSource(CASES / "truncated").collections()
    msg = str(e.value)
    assert (
        f"jobs_{H('jobs')}.data.json" in msg
        and "byte offset 118" in msg
        and "after 2 good records" in msg
    )
    assert "allow-truncated" in msg
    caplog.set_level(logging.WARNING, "etl.sources.dump")
    src = DumpSource(CASES / "truncated", allow_truncated=True)
    assert keys(src, "jobs") == ["t1", "t2"]
    assert any("dropped" in r.message for r in caplog.records)
    # a last line without its newline that parses is fine, with or without the flag
    assert keys(src, "resumes") == ["u1", "u2"]
    assert src.collection("resumes").count == 2


def test_13_empty_inputs():
    src = DumpSource(CASES / "v311_gzip")
    assert src.collection("task_results").count == 0  # empty gzip (20 bytes)
    assert src.collection("documents").count == 0  # no data file at all
    assert list(src.batches("documents", 10)) == [] and src.remaining("task_results") == 0
    assert (
        CASES / "v311_gzip" / f"task_results_{H('task_results')}.data.json.gz"
    ).stat().st_size == 20


def test_13_zero_byte_file_and_blank_lines(tmp_path):
    d = make_dump(tmp_path, b"")
    assert DumpSource(d).collection("c").count == 0
    d = make_dump(
        tmp_path / "2",
        '\n\n{"_key":"a","_id":"c/a","_rev":"_r"}\n \n\r\n{"_key":"b","_id":"c/b","_rev":"_r"}\n\n',
    )
    assert keys(DumpSource(d), "c") == ["a", "b"]


def test_14_bom_crlf_and_u2028_inside_strings(tmp_path):
    data = (
        '\ufeff{"_key":"a","_id":"c/a","_rev":"_r","s":"line\u2028sep\u2029par\u0085nel"}\r\n'
        '{"_key":"b","_id":"c/b","_rev":"_r","t":"tab\\tok"}\r\n'
    ).encode("utf-8")
    d = make_dump(tmp_path, data)
    docs = read_all(DumpSource(d), "c")
    assert [x["_key"] for x in docs] == ["a", "b"]
    assert docs[0]["s"] == "line\u2028sep\u2029par\u0085nel" and docs[1]["t"] == "tab\tok"


def test_15_line_over_16_mib_is_streamed_and_cap_is_configurable(tmp_path):
    big = "x" * (17 * 1024 * 1024)
    d = make_dump(
        tmp_path,
        '{"_key":"s","_id":"c/s","_rev":"_r"}\n{"_key":"big","_id":"c/big","_rev":"_r","blob":"'
        + big
        + '"}\n{"_key":"t","_id":"c/t","_rev":"_r"}\n',
    )
    src = DumpSource(d, chunk_size=1 << 16)
    docs = read_all(src, "c")
    assert [x["_key"] for x in docs] == ["s", "big", "t"] and len(docs[1]["blob"]) == len(big)
    del docs
    capped = DumpSource(d, max_line_bytes=1 << 20)
    with pytest.raises(PermanentError, match="over the limit"):
        capped.collections()


def test_16_numbers_nan_nul_and_lone_surrogates(tmp_path):
    d = make_dump(
        tmp_path,
        '{"_key":"a","_id":"c/a","_rev":"_r","i":123456789012345678901234567890,'
        '"j":18446744073709551621,"z":-0.0,"m":1e308,"n":"a\\u0000b","s":"x\\ud800y"}\n',
    )
    doc = read_all(DumpSource(d), "c")[0]
    assert doc["i"] == 123456789012345678901234567890 and doc["j"] == 2**64 + 5
    assert str(doc["z"]) == "-0.0" and doc["m"] == 1e308
    assert doc["n"] == "a\x00b" and doc["s"] == "x\ud800y"
    d = make_dump(tmp_path / "2", '{"_key":"a","_id":"c/a","_rev":"_r","v":NaN}\n')
    with pytest.raises(PermanentError, match="invalid JSON"):
        DumpSource(d).collections()
    d = make_dump(
        tmp_path / "3",
        b'{"_key":"a","_id":"c/a","_rev":"_r"}\n{"_key":"b","_id":"c/b","_rev":"_r","v":"\xff\xfe"}\n',
    )
    with pytest.raises(PermanentError, match="line 2.*utf-8"):
        read_all(DumpSource(d), "c")  # strict UTF-8 (the scan skips values; the read decodes them)


# ---------------------------------------------------------------------------- 17, 19. layouts


def test_17_all_databases():
    with pytest.raises(PermanentError) as e:
        DumpSource(CASES / "all_databases")
    assert "atspro" in str(e.value) and "staging" in str(e.value)
    src = DumpSource(CASES / "all_databases", database="staging")
    assert src.database == "staging" and read_all(src, "resumes")[0]["db"] == "staging"
    assert (
        read_all(DumpSource(CASES / "all_databases", database="atspro"), "resumes")[0]["db"]
        == "atspro"
    )
    with pytest.raises(PermanentError, match="no database 'prod'.*atspro, staging"):
        DumpSource(CASES / "all_databases", database="prod")
    with pytest.raises(PermanentError, match="holds database 'atspro', not 'x'"):
        DumpSource(CASES / "v38_envelope", database="x")


def test_17_all_databases_with_one_database(tmp_path):
    shutil.copytree(CASES / "all_databases", tmp_path / "one")
    shutil.rmtree(tmp_path / "one" / "staging")
    assert DumpSource(tmp_path / "one").database == "atspro"


def test_17_encrypted_database_subdirectory(tmp_path):
    shutil.copytree(CASES / "all_databases", tmp_path / "a")
    (tmp_path / "a" / "staging" / "ENCRYPTION").write_text("aes-256-ctr")
    with pytest.raises(PermanentError, match="encrypted"):
        DumpSource(tmp_path / "a", database="staging")


def test_19_vpack_refused(tmp_path):
    d = make_dump(tmp_path, None, dump_json='{"database":"db","useVPack":true}')
    with pytest.raises(PermanentError, match="VPack"):
        DumpSource(d)
    d = make_dump(tmp_path / "2", None)
    (d / f"c_{H('c')}.data.vpack.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(PermanentError, match="VPack"):
        DumpSource(d)


def test_19_json_and_json_gz_pair_refused(tmp_path):
    d = make_dump(tmp_path, '{"_key":"a","_id":"c/a","_rev":"_r"}\n')
    (d / f"c_{H('c')}.data.json.gz").write_bytes(gzip.compress(b""))
    with pytest.raises(PermanentError, match="ambiguous"):
        DumpSource(d)


def test_not_a_dump(tmp_path):
    with pytest.raises(PermanentError, match="not a directory"):
        DumpSource(tmp_path / "nope")
    with pytest.raises(PermanentError, match="not an arangodump directory"):
        DumpSource(tmp_path)


def test_open_source_and_protocol():
    src = open_source(f"dump:{CASES / 'v311_gzip'}", settings=None)
    assert isinstance(src, DumpSource) and isinstance(src, Source)
    assert [c.name for c in src.collections()] == ["documents", "jobs", "task_results"]
    b = next(src.batches("jobs", 2))
    assert b.collection == "jobs" and len(b.docs) == 2 and b.position == "2" and b.nbytes > 100
    src.close()


# ---------------------------------------------------------------------------- done-when: one data set, every layout

N_RESUMES = 1100  # about 5k documents


@pytest.fixture(scope="module")
def dataset():
    ds = generate(N_RESUMES, seed=11, bad=True)
    expected = {c: [encode(d) for d in ds[c]] for c in ds}
    return ds, expected


LAYOUTS = {
    "dump-gzip": lambda ds, d: DumpSource(write_dump(d, ds, gzip=True)),
    "dump-plain": lambda ds, d: DumpSource(write_dump(d, ds, gzip=False)),
    "dump-envelope-3.8": lambda ds, d: DumpSource(
        write_dump(d, ds, gzip=False, envelope=True, version_style="3.8")
    ),
    "dump-envelope-gzip": lambda ds, d: DumpSource(
        write_dump(d, ds, gzip=True, envelope=True, version_style="3.8")
    ),
    "dump-split": lambda ds, d: DumpSource(write_dump(d, ds, gzip=True, split_files=400)),
    "dump-plain-names-legacy": lambda ds, d: DumpSource(
        write_dump(d, ds, gzip=False, plain_names=True, version_style="legacy")
    ),
    "dump-3.12": lambda ds, d: DumpSource(write_dump(d, ds, version_style="3.12")),
    "jsonl": lambda ds, d: JsonlSource(write_jsonl(d, ds)),
    "jsonl-gz": lambda ds, d: JsonlSource(write_jsonl(d, ds, gzip=True)),
    "json-array": lambda ds, d: JsonlSource(write_jsonl(d, ds, fmt="json")),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_layout_reads_the_same_documents_exactly_once(dataset, tmp_path, layout):
    ds, expected = dataset
    src = LAYOUTS[layout](ds, tmp_path / layout)
    infos = {c.name: c for c in src.collections()}
    assert set(infos) == set(expected)
    assert infos["job_research"].type == "edge" and infos["resumes"].type == "document"
    for name, exp in expected.items():
        got = [encode(d) for d in read_all(src, name, batch_size=700)]
        assert got == exp, name  # same documents, same order, each exactly once
        assert infos[name].count == len(exp) == src.remaining(name)


def test_resume_from_every_batch_boundary(dataset, tmp_path):
    ds, expected = dataset
    src = DumpSource(write_dump(tmp_path / "d", ds, gzip=True, split_files=300))
    for name in ("resumes", "job_research"):
        exp = expected[name]
        batches = list(src.batches(name, 97))
        assert sum(len(b.docs) for b in batches) == len(exp)
        for b in batches:
            rest = [encode(d) for d in read_all(src, name, batch_size=250, after=b.position)]
            assert rest == exp[int(b.position) :]
            assert src.remaining(name, b.position) == len(rest)
            assert len({d["_key"] for d in b.docs}) == len(b.docs)


# ---------------------------------------------------------------------------- flat memory


def _synthetic_dump(d: Path, n: int) -> Path:
    pad = "lorem ipsum dolor sit amet " * 40

    def docs():
        for i in range(n):
            yield {
                "_key": str(10_000 + i),
                "_id": f"resumes/{10_000 + i}",
                "_rev": f"_r{i}",
                "user_id": f"user_{i % 977}",
                "resume_data": {"summary": pad + str(i), "n": i},
            }

    return write_dump(d, {"resumes": docs()}, gzip=True)


def _peak_streaming(path: Path) -> tuple[int, int]:
    tracemalloc.start()
    try:
        src = DumpSource(path)
        n = src.collection("resumes").count
        read = 0
        for b in src.batches("resumes", 1000):
            read += len(b.docs)
        assert read == n
        return n, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_is_flat_while_streaming(tmp_path):
    n_small, peak_small = _peak_streaming(_synthetic_dump(tmp_path / "small", 20_000))
    n_big, peak_big = _peak_streaming(_synthetic_dump(tmp_path / "big", 100_000))
    assert (n_small, n_big) == (20_000, 100_000)
    # 5x the documents; a reader that held them would need > 100 MB here
    assert peak_big < 2 * peak_small + 8 * 2**20, (peak_small, peak_big)
    assert peak_big < 48 * 2**20, peak_big


def test_null_and_array_lines_are_errors(tmp_path):
    d = make_dump(tmp_path, '{"_key":"a","_id":"c/a","_rev":"_r"}\nnull\n')
    with pytest.raises(PermanentError, match="line 2: expected a JSON object, found NoneType"):
        DumpSource(d).collections()
    d = make_dump(tmp_path / "2", '[{"_key":"a"}]\n')
    with pytest.raises(PermanentError, match="possibly encrypted"):
        DumpSource(d).collections()
