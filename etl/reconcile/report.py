"""The reconcile report: one line per finding, the terminal table, the markdown page, and the
report files (written by etl.report with this module's markdown). Renders a summary's asdict()."""

from __future__ import annotations

from pathlib import Path

from etl.report import edge_end_lines

TERMINAL_FINDINGS = 100  # findings printed in the terminal; the report files hold all


def findings(doc: dict) -> list[str]:
    """One line per finding, in collection order."""
    out = []
    for c in doc["collections"]:
        for kind in ("missing", "extra", "differing"):
            for it in c.get(kind) or []:
                what = f" ({it['what']})" if it.get("what") else ""
                line = f"{kind:9} {c['collection']}/{it.get('key')}{what} id {it['id']}"
                if kind == "differing":
                    line += (
                        ": "
                        + ", ".join(it["paths"][:10])
                        + (" ..." if len(it["paths"]) > 10 else "")
                    )
                elif it.get("source"):
                    line += f": {it['source']}"
                out.append(line)
    return out


def render_table(doc: dict) -> str:
    header = [
        "collection",
        "status",
        "source_count",
        "checked",
        "loaded",
        "rejected",
        "unmapped",
        "missing",
        "extra",
        "differing",
        "balanced",
    ]
    rows = [
        [
            c["collection"],
            c["status"],
            str(c["source_count"]),
            str(c["checked"]),
            str(c["counts"]["loaded"]),
            str(c["counts"]["rejected"]),
            str(c["counts"]["unmapped"]),
            str(len(c["missing"])),
            str(len(c["extra"])),
            str(len(c["differing"])),
            "ok" if c["balanced"] else "NO",
        ]
        for c in doc["collections"]
    ]
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]

    def line(cells):
        return "  ".join(x.ljust(w) for x, w in zip(cells, widths)).rstrip()

    out = [line(header), line(["-" * w for w in widths]), *map(line, rows)]
    if doc.get("sample"):
        s = doc["sample"]
        out.append(
            f"sample: {s['percent']}% of the keys ({s['buckets_checked']} of {s['buckets_total']}"
            f" key ranges, seed {s['seed']})"
        )
    lines = findings(doc)
    if lines:
        out += [
            "",
            f"{len(lines)} finding(s)"
            + (f", the first {TERMINAL_FINDINGS}:" if len(lines) > TERMINAL_FINDINGS else ":"),
        ]
        out += lines[:TERMINAL_FINDINGS]
    return "\n".join(out)


def render_markdown(doc: dict) -> str:
    out = [
        f"# Reconcile report: {doc['run_id']}",
        "",
        f"- state: **{doc['state']}**, result: **{doc['verdict']}**",
        f"- started: {doc['started_at']}, finished: {doc.get('finished_at')}",
        f"- operator: {doc.get('operator')}",
        f"- source: {doc['source']}",
        f"- target: {doc['target']}",
        f"- schema version: {doc.get('schema_version')}, PostgreSQL {doc.get('server_version')}, "
        f"mapping version {doc.get('mapping_version')}",
    ]
    if doc.get("sample"):
        s = doc["sample"]
        out.append(
            f"- SAMPLE: only {s['percent']}% of the keys were checked ({s['buckets_checked']} of "
            f"{s['buckets_total']} key ranges, seed {s['seed']}); counts are for those keys"
        )
    if doc.get("error"):
        out.append(f"- error: `{doc['error']}`")
    out += [
        "",
        "## Counts",
        "",
        "```",
        render_table({**doc, "collections": doc["collections"], "sample": None}).split("\n\n")[0],
        "```",
    ]
    for c in doc["collections"]:
        out += [
            "",
            f"## {c['collection']} ({c['status']})",
            "",
            f"source {c['source_count']}, checked {c['checked']}: loaded {c['counts']['loaded']} + "
            f"rejected {c['counts']['rejected']} + unmapped {c['counts']['unmapped']} "
            f"({'balanced' if c['balanced'] else 'NOT balanced'}); {c['seconds']} s.",
        ]
        if c["by_type"]:
            out += [
                "",
                "| document type | source rows | loaded | rejected | matched | missing | extra | differing | key ranges differing |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for t, n in c["by_type"].items():
                out.append(
                    f"| {t} | {n['source_rows']} | {n['loaded']} | {n['rejected']} | {n['matched']} | "
                    f"{n['missing']} | {n['extra']} | {n['differing']} | {n['buckets_differing']} of {n['buckets']} |"
                )
        if c.get("dangling_references"):
            out += [
                "",
                f"Dangling references (the referenced document is not in the target): {c['dangling_references']}",
            ]
        out += edge_end_lines(c)
        if c.get("rejects_by_reason"):
            out += [
                "",
                "Rejected: " + ", ".join(f"`{r}` ({n})" for r, n in c["rejects_by_reason"].items()),
            ]
        lines = findings({"collections": [c]})
        if lines:
            out += ["", "Findings:", ""] + [f"- `{ln}`" for ln in lines]
    return "\n".join(out) + "\n"


def write_reports(summary: dict, reports_dir: str | Path) -> dict[str, Path]:
    """reports/<run id>.json, .md and .html with this module's markdown layout."""
    from etl import report

    return report.write_reports(summary, reports_dir, markdown=render_markdown)
