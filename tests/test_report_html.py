"""The operator's HTML report: content, escaping, self-containment, and (when a chromium binary is
installed; ETL_REQUIRE_BROWSER=1, as in CI, requires one) a headless screenshot that must show a
real, coloured page."""

from __future__ import annotations

import os
import re
import shutil
import stat
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from etl.report import write_reports
from etl.report_html import render_html
from tests.helpers import REPO

HOSTILE_KEY = "<script>alert('key')</script>"
HOSTILE_REASON_EXAMPLE = (
    f"{HOSTILE_KEY}: bad_email: email 'x\"><img src=x onerror=alert(1)>' is not an address"
)


def _batches(n: int, size: int, rate: float, wobble: float) -> list[dict]:
    out = []
    for seq in range(1, n + 1):
        docs = size if seq < n else size // 3
        r = rate * (1 + wobble * ((seq * 37) % 11 - 5) / 5)
        out.append({"seq": seq, "docs": docs, "bytes": docs * 2900, "seconds": round(docs / r, 4)})
    return out


def _counts(read=0, inserted=0, updated=0, unchanged=0, rejected=0, unmapped=0, dangling=0) -> dict:
    return {
        "read": read,
        "inserted": inserted,
        "updated": updated,
        "unchanged": unchanged,
        "rejected": rejected,
        "unmapped": unmapped,
        "dangling": dangling,
        "loaded": inserted + updated + unchanged,
    }


def migrate_summary() -> dict:
    """Shaped like RunSummary.asdict(): 4 collections, 50 batches, rejects, dangling, unmapped, one
    collection whose counts do not balance."""
    resumes = {
        "collection": "resumes",
        "status": "migrated",
        "source_count": 12000,
        "counts": _counts(read=12000, inserted=11200, updated=300, unchanged=450, rejected=50),
        "balanced": True,
        "by_type": {
            "resume": _counts(read=12000, inserted=11200, updated=300, unchanged=450, rejected=50)
        },
        "batches": 24,
        "seconds": 31.2,
        "bytes": 34_800_000,
        "docs_per_second": 384.6,
        "rejects_by_reason": [
            {
                "reason": "nul_in_string",
                "count": 30,
                "examples": [
                    f"r{i:05d}: nul_in_string: parsed_data.summary contains \\u0000"
                    for i in range(5)
                ],
            },
            {"reason": "bad_email", "count": 20, "examples": [HOSTILE_REASON_EXAMPLE]},
        ],
        "unmapped_by_reason": [],
        "unmapped_keys": [],
        "dangling_references": {},
        "field_coverage": {
            "columns_filled": {"user_id": 11950, "filename": 11950, "parsed_data": 11950},
            "kept_in_metadata_extra": {"legacyScore": 812, "importedFrom": 40},
        },
        "batch_stats": _batches(24, 500, 420.0, 0.25),
        "warnings": [],
    }
    jobs = {
        "collection": "jobs",
        "status": "migrated",
        "source_count": 8000,
        "counts": _counts(read=8000, inserted=8000, dangling=12),
        "balanced": True,
        "by_type": {},
        "batches": 16,
        "seconds": 9.8,
        "bytes": 12_000_000,
        "docs_per_second": 816.3,
        "rejects_by_reason": [],
        "unmapped_by_reason": [],
        "unmapped_keys": [],
        "dangling_references": {"resume_id": 12},
        "field_coverage": {
            "columns_filled": {"title": 8000, "company": 7990},
            "kept_in_metadata_extra": {},
        },
        "batch_stats": _batches(16, 500, 900.0, 0.35),
        "warnings": ["3 documents had a lone surrogate replaced"],
    }
    documents = {
        "collection": "documents",
        "status": "migrated",
        "source_count": 5050,
        "counts": _counts(read=5010, inserted=5000, rejected=10),
        "balanced": False,
        "by_type": {
            "optimization": _counts(read=3000, inserted=2995, rejected=5),
            "research": _counts(read=2010, inserted=2005, rejected=5),
        },
        "batches": 10,
        "seconds": 14.1,
        "bytes": 20_000_000,
        "docs_per_second": 355.3,
        "rejects_by_reason": [
            {
                "reason": "bad_reference",
                "count": 10,
                "examples": ["d00017: bad_reference: resume_id is not a key"],
            }
        ],
        "unmapped_by_reason": [],
        "unmapped_keys": [],
        "dangling_references": {},
        "field_coverage": {"columns_filled": {}, "kept_in_metadata_extra": {}},
        "batch_stats": _batches(10, 500, 360.0, 0.15),
        "warnings": [],
    }
    task_results = {
        "collection": "task_results",
        "status": "unmapped",
        "source_count": 734,
        "counts": _counts(read=734, unmapped=734),
        "balanced": True,
        "by_type": {},
        "batches": 0,
        "seconds": 0.0,
        "bytes": 0,
        "docs_per_second": None,
        "rejects_by_reason": [],
        "unmapped_by_reason": [{"reason": "transient task state, not migrated", "count": 734}],
        "unmapped_keys": ['"><svg onload=alert(1)>'] + [f"t{i:05d}" for i in range(733)],
        "dangling_references": {},
        "field_coverage": {"columns_filled": {}, "kept_in_metadata_extra": {}},
        "batch_stats": [],
        "warnings": [],
    }
    return {
        "report_schema_version": 1,
        "etl_version": "0.1.0",
        "operator": "ops@etl-night-1",
        "run_id": "20261124T010003Z-7f3a",
        "command": "migrate",
        "dry_run": False,
        "state": "finished",
        "started_at": "2026-11-24T01:00:03.120000+00:00",
        "finished_at": "2026-11-24T01:01:01.480000+00:00",
        "source": "dump:dumps/atspro-2026-11-23",
        "target": "postgresql://etl@db.internal:5432/atspro",
        "schema_version": "007",
        "server_version": "16.4",
        "mapping_version": "3",
        "batch_size": 500,
        "estimated_seconds": None,
        "error": None,
        "collections": [resumes, jobs, documents, task_results],
    }


def reconcile_summary() -> dict:
    """Shaped like ReconcileSummary.asdict(): one match, one collection with missing, extra and 130
    differing rows (one a wrong parent), one unmapped."""

    def item(key, dt="job", table="jobs", **kw):
        return {
            "key": key,
            "id": f"{zlib.crc32(key.encode()):08x}-0000-5000-8000-000000000000",
            "document_type": dt,
            "table": table,
            **kw,
        }

    differing = [
        item(f"j{i:05d}", fields=["parsed_data"], paths=[f"parsed_data.skills[{i % 7}]"])
        for i in range(128)
    ]
    differing.insert(3, item(HOSTILE_KEY, fields=["title", "company"], paths=["title", "company"]))
    differing.append(
        item(
            "o00042",
            dt="optimization",
            table="optimizations",
            fields=["resume_id"],
            paths=["resume_id"],
        )
    )
    cols = [
        {
            "collection": "resumes",
            "kind": "document",
            "status": "match",
            "source_count": 12000,
            "checked": 12000,
            "counts": {"loaded": 11950, "rejected": 50, "unmapped": 0},
            "balanced": True,
            "differences": 0,
            "by_type": {
                "resume": {
                    "source_rows": 12000,
                    "loaded": 11950,
                    "rejected": 50,
                    "matched": 11950,
                    "missing": 0,
                    "extra": 0,
                    "differing": 0,
                    "buckets": 64,
                    "buckets_differing": 0,
                }
            },
            "missing": [],
            "extra": [],
            "differing": [],
            "dangling_references": {},
            "rejects_by_reason": {"nul_in_string": 30, "bad_email": 20},
            "seconds": 4.2,
        },
        {
            "collection": "jobs",
            "kind": "document",
            "status": "differences",
            "source_count": 8000,
            "checked": 8000,
            "counts": {"loaded": 8000, "rejected": 0, "unmapped": 0},
            "balanced": True,
            "differences": 134,
            "by_type": {},
            "missing": [item("j07001"), item("j07002"), item("j07003")],
            "extra": [item("j99999", source="no such key in the source", arango_collection="jobs")],
            "differing": differing,
            "dangling_references": {"resume_id": 12},
            "rejects_by_reason": {},
            "seconds": 3.1,
        },
        {
            "collection": "task_results",
            "kind": "unmapped",
            "status": "unmapped",
            "source_count": 734,
            "checked": 734,
            "counts": {"loaded": 0, "rejected": 0, "unmapped": 734},
            "balanced": True,
            "differences": 0,
            "by_type": {},
            "missing": [],
            "extra": [],
            "differing": [],
            "dangling_references": {},
            "rejects_by_reason": {},
            "seconds": 0.1,
        },
    ]
    return {
        "report_schema_version": 1,
        "etl_version": "0.1.0",
        "operator": "ops@etl-night-1",
        "run_id": "20261124T020000Z-rc01",
        "command": "reconcile",
        "dry_run": False,
        "state": "finished",
        "started_at": "2026-11-24T02:00:00+00:00",
        "finished_at": "2026-11-24T02:00:08+00:00",
        "source": "arangodb http://arango.internal:8529 db atspro",
        "target": "postgresql://etl@db.internal:5432/atspro",
        "schema_version": "007",
        "server_version": "16.4",
        "mapping_version": "3",
        "sample": None,
        "has_differences": True,
        "error": None,
        "collections": cols,
    }


def _section(page: str, index: int) -> str:
    start = page.index(f'id="c{index}"')
    end = page.find("<section", start)
    return page[start : end if end > 0 else None]


def _assert_self_contained(page: str) -> None:
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href|xlink:href|action)\s*=\s*["']?\s*(https?:|//)""", page, re.I)
    assert "url(" not in page and "@import" not in page and "<link" not in page.lower()
    assert "<iframe" not in page.lower() and "<img" not in page.lower()


# -- content ----------------------------------------------------------------------------------


def test_migrate_page_statuses_counts_and_sections():
    page = render_html(migrate_summary())
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "20261124T010003Z-7f3a" in page
    assert (
        "dump:dumps/atspro-2026-11-23" in page
        and "postgresql://etl@db.internal:5432/atspro" in page
    )
    assert "58 s" in page  # duration from started_at/finished_at
    # status per collection: green, green, red (unbalanced), grey (unmapped)
    assert 'class="coll st-ok" id="c0"' in page and 'class="coll st-ok" id="c1"' in page
    assert 'class="coll st-bad" id="c2"' in page and 'class="coll st-none" id="c3"' in page
    assert "UNBALANCED" in _section(page, 2) and "off by 40" in _section(page, 2)
    assert "UNMAPPED" in _section(page, 3)
    assert "1 of 4 collections needs attention" in page
    # counts and the balance check
    resumes = _section(page, 0)
    for figure in ("12,000", "11,200", "300", "450", "11,950", "50"):
        assert f"<b>{figure}</b>" in resumes
    assert "source 12,000 = loaded 11,950 + rejected 50 + unmapped 0" in resumes
    assert "✓ balanced" in resumes
    # rejects by reason with examples, dangling, unmapped keys (100 inline + the count of the rest)
    assert "nul_in_string" in resumes and "r00004: nul_in_string" in resumes
    assert "<code>resume_id</code>" in _section(page, 1)
    unmapped = _section(page, 3)
    assert "transient task state, not migrated" in unmapped
    assert "t00098" in unmapped and "t00099" not in unmapped and "… and 634 more" in unmapped
    assert "3 documents had a lone surrogate replaced" in page
    assert "legacyScore" in page


def test_migrate_page_throughput_chart():
    page = render_html(migrate_summary())
    svg = page[page.index("<svg") : page.index("</svg>")]
    bars = re.findall(r"<rect [^>]*><title>", svg)
    assert len(bars) == 50  # one bar per batch, across the 3 collections that have batches
    assert "batch (in run order, across collections)" in svg and "documents / second" in svg
    assert svg.count('stroke-dasharray="3 3"') == 2  # boundaries between the 3 collections
    assert svg.count("median") == 3  # a median line per collection
    # three colours, and a legend naming each collection
    assert len(set(re.findall(r'<rect [^>]*fill="(#[0-9a-f]{6})"><title>', svg))) == 3
    legend = page[page.index('class="legend"') : page.index("<svg")]
    assert (
        "resumes" in legend
        and "jobs" in legend
        and "documents" in legend
        and "task_results" not in legend
    )
    # docs/s per batch = docs / seconds: the first resumes batch
    b = migrate_summary()["collections"][0]["batch_stats"][0]
    assert f"{b['docs'] / b['seconds']:,.0f} docs/s" in svg


def test_reconcile_page_differences():
    page = render_html(reconcile_summary())
    assert "Reconcile report" in page
    assert 'class="coll st-ok" id="c0"' in page and "MATCH" in _section(page, 0)
    assert 'class="coll st-bad" id="c1"' in page and "DIFFERENCES" in _section(page, 1)
    assert 'class="coll st-none" id="c2"' in page
    jobs = _section(page, 1)
    assert "Missing in the target: 3" in jobs and "Extra in the target: 1" in jobs
    assert "Differing: 130" in jobs and "… and 30 more differing key(s)" in jobs
    assert "no such key in the source" in jobs
    assert '<span class="chip">parsed_data</span>' in jobs
    assert "j00098" in jobs and "j00099" not in jobs  # the first 100 inline
    # reconcile's rejects_by_reason is a dict {reason: count}
    assert "bad_email" in _section(page, 0)
    assert "checked" in _section(page, 0)
    _assert_self_contained(page)
    # the source is a URL; it is shown as text, never used as a resource
    assert "arangodb http://arango.internal:8529 db atspro" in page


def test_hostile_strings_are_escaped():
    doc = migrate_summary()
    doc["run_id"] = "<b>run</b>"
    doc["collections"][1]["collection"] = "jobs<style>*{display:none}</style>"
    for page in (render_html(doc), render_html(reconcile_summary())):
        _assert_self_contained(page)
        assert "&lt;script&gt;alert(&#x27;key&#x27;)&lt;/script&gt;" in page
    page = render_html(doc)
    assert "<b>run</b>" not in page and "&lt;b&gt;run&lt;/b&gt;" in page
    assert page.count("<style>") == 1 and "&lt;style&gt;*{display:none}" in page
    assert "<svg onload" not in page and "&quot;&gt;&lt;svg onload=alert(1)&gt;" in page
    assert "<img" not in page
    assert "http://" not in page and "https://" not in page


def test_partial_and_unknown_shapes_render():
    for doc in (
        {},
        {"run_id": "x", "command": "migrate", "collections": [{"collection": "a"}]},
        {
            "run_id": "y",
            "command": "reconcile",
            "state": "failed",
            "error": "connection refused",
            "collections": [
                {
                    "collection": "b",
                    "status": "failed",
                    "missing": ["k1", "<k2>"],
                    "batch_stats": [{"seq": 1, "docs": 10, "seconds": 0}],
                }
            ],
        },
    ):
        page = render_html(doc)
        assert "</html>" in page
    page = render_html(
        {
            "run_id": "y",
            "state": "failed",
            "error": "connection <refused>",
            "collections": [{"collection": "b", "status": "failed"}],
        }
    )
    assert "Run failed" in page and "connection &lt;refused&gt;" in page and "st-bad" in page


def test_dry_run_header():
    doc = migrate_summary()
    doc.update(dry_run=True, estimated_seconds=3725.0)
    page = render_html(doc)
    assert "Dry run report" in page and "DRY RUN" in page and "1 h 02 min 05 s" in page


def test_write_reports_adds_private_html(tmp_path):
    summary = migrate_summary()
    for key in ("report_schema_version", "etl_version", "operator"):
        summary.pop(key)
    paths = write_reports(summary, tmp_path / "reports")
    assert set(paths) == {"json", "md", "html"}
    for p in paths.values():
        assert p.exists() and stat.S_IMODE(p.stat().st_mode) == 0o600
    page = paths["html"].read_text(encoding="utf-8")
    assert paths["html"].name == "20261124T010003Z-7f3a.html"
    assert "20261124T010003Z-7f3a" in page and "report schema 1" in page


# -- headless chromium ------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium")
# .ci/run installs chromium and sets ETL_REQUIRE_BROWSER=1: there a missing browser is a failure,
# so that CI cannot pass without rendering a page.
REQUIRE_BROWSER = os.environ.get("ETL_REQUIRE_BROWSER") == "1"
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not REQUIRE_BROWSER,
    reason="no chromium binary on PATH (apt-get install chromium)",
)


def _require_chromium() -> None:
    if CHROMIUM is None:
        pytest.fail(
            "ETL_REQUIRE_BROWSER=1 but no chromium binary on PATH (apt-get install chromium)"
        )


def _screenshot(html_path: Path, png: Path, tmp: Path) -> None:
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        f"--screenshot={png}",
        "--window-size=1280,2000",
        "--hide-scrollbars",
        html_path.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert png.exists(), (
        f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    )


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit, non-interlaced RGB or RGBA PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, [], 0
    while pos < len(data):
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if ctype == b"IHDR":
            width, height, depth, colour, _c, _f, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
            bpp = 3 if colour == 2 else 4
        elif ctype == b"IDAT":
            idat.append(body)
        pos += 12 + length
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        ftype, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        if ftype == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif ftype == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev))
        elif ftype == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif ftype == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return (
        width,
        height,
        [bytes(r) if bpp == 3 else bytes(b for k, b in enumerate(r) if k % 4 != 3) for r in rows],
    )


def _pixels(rows: list[bytes], step: int = 3):
    for r in rows[::step]:
        for x in range(0, len(r) - 2, 3 * step):
            yield r[x], r[x + 1], r[x + 2]


def _near(px, rgb, tol=12) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(px, rgb))


@needs_chromium
def test_screenshot_shows_a_real_page(tmp_path):
    _require_chromium()
    page = tmp_path / "report.html"
    page.write_text(render_html(migrate_summary()), encoding="utf-8")
    png = tmp_path / "report.png"
    _screenshot(page, png, tmp_path)
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>", encoding="utf-8")
    blank_png = tmp_path / "blank.png"
    _screenshot(blank, blank_png, tmp_path)

    size, blank_size = png.stat().st_size, blank_png.stat().st_size
    assert size > 50_000 and size > 10 * blank_size, (size, blank_size)
    width, height, rows = decode_png(png.read_bytes())
    assert (width, height) == (1280, 2000)
    pixels = list(_pixels(rows))
    colours = {p for p in pixels}
    assert len(colours) > 200, len(colours)  # text, chart, tiles: not a flat page
    background = max(colours, key=pixels.count)
    assert sum(p != background for p in pixels) > len(pixels) // 10
    # the status blocks: green (#1e8e3e) and red (#c5221f) are on screen
    assert sum(_near(p, (0x1E, 0x8E, 0x3E)) for p in pixels) > 500
    assert sum(_near(p, (0xC5, 0x22, 0x1F)) for p in pixels) > 500
    _, _, blank_rows = decode_png(blank_png.read_bytes())
    assert len(set(_pixels(blank_rows))) <= 2  # the comparison page really is blank


@needs_chromium
def test_screenshot_script(tmp_path):
    _require_chromium()
    page = tmp_path / "reconcile.html"
    page.write_text(render_html(reconcile_summary()), encoding="utf-8")
    png = tmp_path / "out" / "reconcile.png"
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "report_screenshot.sh"), str(page), str(png)],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert png.exists() and png.stat().st_size > 50_000
    width, _h, rows = decode_png(png.read_bytes())
    assert width == 1280 and len(set(_pixels(rows, step=6))) > 100
    missing = subprocess.run(
        [
            "bash",
            str(REPO / "scripts" / "report_screenshot.sh"),
            str(tmp_path / "nope.html"),
            str(tmp_path / "x.png"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode != 0 and "nope.html" in missing.stderr
