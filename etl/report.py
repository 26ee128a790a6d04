"""Reports for operators: reports/<run id>.json (stable, schema in docs/report.schema.json) and
.md, plus the summary table printed in the terminal. Renders a summary's asdict(); never reads
the database, so a failed run still gets its report."""

from __future__ import annotations

import getpass
import json
import os
import socket
from pathlib import Path

from etl import __version__

REPORT_SCHEMA_VERSION = 1


def write_reports(summary: dict, reports_dir: str | Path, *, markdown=None) -> dict[str, Path]:
    """Write <run id>.json, .md and .html (0600: they can hold source data); return their paths.
    `markdown` renders the .md (default: the migrate/dry-run layout of this module)."""
    out = Path(reports_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "report_schema_version": REPORT_SCHEMA_VERSION,
        "etl_version": __version__,
        "operator": operator_name(),
        **summary,
    }
    paths = {
        "json": out / f"{summary['run_id']}.json",
        "md": out / f"{summary['run_id']}.md",
        "html": out / f"{summary['run_id']}.html",
    }
    write_private(paths["json"], json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n")
    write_private(paths["md"], (markdown or render_markdown)(doc))
    try:  # the page is a convenience: a bug in it must not cost the run its json and md reports
        from etl.report_html import render_html

        write_private(paths["html"], render_html(doc))
    except Exception as exc:  # noqa: BLE001
        import logging

        logging.getLogger("etl.report").warning("could not write %s: %s", paths.pop("html"), exc)
    return paths


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # A lone surrogate (a source key or value can hold one) is not UTF-8: written as \udXXX,
    # which inside a JSON string is the same character's escape, so the .json stays valid.
    with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as fh:
        fh.write(text)


def operator_name() -> str:
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


COLUMNS = (
    "source_count",
    "read",
    "inserted",
    "updated",
    "unchanged",
    "rejected",
    "unmapped",
    "dangling",
)


def summary_rows(summary: dict) -> list[list[str]]:
    rows = []
    for c in summary["collections"]:
        counts = c["counts"]
        balanced = c.get("balanced")
        ok = "incomplete" if balanced is None else "ok" if balanced else "UNBALANCED"
        rows.append(
            [c["collection"], c["status"], str(c["source_count"])]
            + [str(counts[k]) for k in COLUMNS[1:]]
            + [ok]
        )
    return rows


def render_table(summary: dict) -> str:
    header = ["collection", "status", *COLUMNS, "source=loaded+rejected+unmapped"]
    rows = summary_rows(summary)
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]

    def line(cells):
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def render_markdown(doc: dict) -> str:
    kind = "Dry run" if doc.get("dry_run") else doc["command"].capitalize()
    out = [
        f"# {kind} report: {doc['run_id']}",
        "",
        f"- state: **{doc['state']}**",
        f"- started: {doc['started_at']}, finished: {doc.get('finished_at')}",
        f"- operator: {doc.get('operator')}",
        f"- source: {doc['source']}",
        f"- target: {doc['target']}",
        f"- schema version: {doc.get('schema_version')}, PostgreSQL {doc.get('server_version')}, "
        f"mapping version {doc.get('mapping_version')}, batch size {doc.get('batch_size')}",
    ]
    if doc.get("estimated_seconds") is not None:
        out.append(f"- estimated duration of the real run: {doc['estimated_seconds']} s")
    if doc.get("error"):
        out.append(f"- error: `{doc['error']}`")
    out += [
        "",
        "## Counts",
        "",
        "| collection | status | " + " | ".join(COLUMNS) + " | balanced |",
        "|" + "---|" * (len(COLUMNS) + 3),
    ]
    for row in summary_rows(doc):
        out.append("| " + " | ".join(row) + " |")
    for c in doc["collections"]:
        out += [
            "",
            f"## {c['collection']}",
            "",
            f"{c['batches']} batches, {c['seconds']} s, "
            f"{c.get('docs_per_second') or '-'} docs/s, {c['bytes']} bytes read.",
        ]
        if c.get("by_type"):
            out += [
                "",
                "| document type | read | inserted | updated | unchanged | rejected | dangling |",
                "|---|---|---|---|---|---|---|",
            ]
            for t, n in c["by_type"].items():
                out.append(
                    f"| {t} | {n['read']} | {n['inserted']} | {n['updated']} | {n['unchanged']} "
                    f"| {n['rejected']} | {n['dangling']} |"
                )
        if c["rejects_by_reason"]:
            out += ["", "Rejects by reason (whole documents are in etl_rejects):", ""]
            for r in c["rejects_by_reason"]:
                out.append(f"- `{r['reason']}`: {r['count']}")
                out += [f"  - {e}" for e in r["examples"]]
        if c["unmapped_by_reason"]:
            out += ["", "Not migrated:", ""]
            out += [f"- {r['reason']}: {r['count']}" for r in c["unmapped_by_reason"]]
            if c["unmapped_keys"]:
                out.append(
                    f"- keys: {', '.join(c['unmapped_keys'][:50])}"
                    + (" ..." if len(c["unmapped_keys"]) > 50 else "")
                )
        if c.get("dangling_references"):
            out += ["", f"Dangling references: {c['dangling_references']}"]
        out += edge_end_lines(c)
        cov = c.get("field_coverage") or {}
        if cov.get("kept_in_metadata_extra"):
            out += [
                "",
                "Kept only in metadata.extra: "
                + ", ".join(
                    f"`{k}` ({n})" for k, n in sorted(cov["kept_in_metadata_extra"].items())
                ),
            ]
        if cov.get("columns_filled"):
            out += [
                "",
                "Columns filled: "
                + ", ".join(f"`{k}` ({n})" for k, n in sorted(cov["columns_filled"].items())),
            ]
        if c.get("warnings"):
            out += ["", "Warnings:", ""] + [f"- {w}" for w in c["warnings"][:100]]
    return "\n".join(out) + "\n"


def edge_end_lines(c: dict) -> list[str]:
    """Markdown of a collection's generic edge ends the target does not hold."""
    out = []
    if c.get("unknown_end_collections"):
        out += [
            "",
            "Edge ends in collections that are not migrated: "
            + ", ".join(f"`{k}` ({n})" for k, n in sorted(c["unknown_end_collections"].items())),
        ]
    if c.get("dangling_edges"):
        shown = c["dangling_edges"][:50]
        out += ["", "Edges with an end the target does not hold (loaded as they are):", ""]
        out += [f"- `{e['key']}` {e['end']} `{e['ref']}` ({e['problem']})" for e in shown]
        if len(c["dangling_edges"]) > 50:
            out.append(f"- ... {len(c['dangling_edges']) - 50} more in the .json report")
    return out
