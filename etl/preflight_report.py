"""The preflight's outputs: the terminal table, and reports/preflight-<UTC stamp>-<hex>.json, .md
and .html (mode 0600, like every etl report). The HTML page is self-contained (inline CSS, no
script, no network) and every value in it is escaped. All three render the dict of
PreflightResult.asdict(), whose shape docs/preflight.md describes."""

from __future__ import annotations

import html
import json
import shutil
import sys
import textwrap
from pathlib import Path

from etl.report import operator_name, write_private

VERDICT = {
    "ready": "ready: every check passed",
    "warnings": "warnings: the run can go, read the warnings first",
    "blocked": "blocked: fix what failed before the run",
}


def write_reports(doc: dict, reports_dir: str | Path) -> dict[str, Path]:
    """<id>.json, .md and .html in reports_dir (created when missing); returns their paths."""
    out = Path(reports_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = {**doc, "operator": operator_name()}
    paths = {kind: out / f"{doc['id']}.{kind}" for kind in ("json", "md", "html")}
    write_private(paths["json"], json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n")
    write_private(paths["md"], render_markdown(doc))
    write_private(paths["html"], render_html(doc))
    return paths


def counts(doc: dict) -> dict[str, int]:
    out = {s: 0 for s in ("ok", "info", "warn", "fail")}
    for c in doc["checks"]:
        out[c["status"]] = out.get(c["status"], 0) + 1
    return out


def summary_line(doc: dict) -> str:
    n = counts(doc)
    return (
        f"preflight {doc['id']}: {doc['status']} ({n['fail']} failed, {n['warn']} warnings,"
        f" {n['ok']} ok, {n['info']} info)"
    )


# -- terminal ------------------------------------------------------------------------------------


def render_table(doc: dict, width: int | None = None) -> str:
    """check | status | detail. On a terminal, details wrap under their column; otherwise each
    check is one line (for logs and grep)."""
    rows = [(c["name"], c["status"], c["detail"]) for c in doc["checks"]]
    w_name = max([len("check"), *(len(r[0]) for r in rows)])
    w_status = max(len("status"), 4)
    if width is None and sys.stdout.isatty():
        width = shutil.get_terminal_size((120, 24)).columns
    indent = w_name + w_status + 4
    lines = [
        f"{'check'.ljust(w_name)}  {'status'.ljust(w_status)}  detail",
        f"{'-' * w_name}  {'-' * w_status}  {'-' * 6}",
    ]
    for name, status, detail in rows:
        if width and width - indent >= 30:
            parts = textwrap.wrap(detail, width - indent) or [""]
        else:
            parts = [detail]
        lines.append(f"{name.ljust(w_name)}  {status.ljust(w_status)}  {parts[0]}".rstrip())
        lines += [" " * indent + p for p in parts[1:]]
    return "\n".join(lines)


# -- markdown ------------------------------------------------------------------------------------


def _md(text: object) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def render_markdown(doc: dict) -> str:
    n = counts(doc)
    out = [
        f"# Preflight report: {doc['id']}",
        "",
        f"**{VERDICT.get(doc['status'], doc['status'])}** ({n['fail']} failed, {n['warn']}"
        f" warnings, {n['ok']} ok, {n['info']} info)",
        "",
        f"- created: {doc['created_at']}",
        f"- operator: {doc.get('operator')}",
        f"- target: {_md(doc['target'])}",
        f"- source: {_md(doc['source'])}",
        f"- mapping: {_md(doc.get('mapping'))}",
        f"- etl {doc['etl_version']}, preflight report schema {doc['report_schema_version']}",
        "",
        "| check | status | detail |",
        "|---|---|---|",
    ]
    for c in doc["checks"]:
        status = c["status"] if c["status"] in ("ok", "info") else f"**{c['status']}**"
        out.append(f"| {_md(c['name'])} | {status} | {_md(c['detail'])} |")
    return "\n".join(out) + "\n"


# -- html ----------------------------------------------------------------------------------------


def e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


CSS = """
:root{--ok:#1e8e3e;--ok-bg:#e6f4ea;--bad:#c5221f;--bad-bg:#fce8e6;--warn:#8a5300;--warn-bg:#fff4e0;
--info:#3c4f66;--info-bg:#eef2f7;--ink:#1f2933;--muted:#5f6b7a;--line:#dde2e8}
*{box-sizing:border-box}
body{margin:0;background:#f3f5f8;color:var(--ink);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:24px}
header,.panel{background:#fff;border:1px solid var(--line);border-radius:10px;padding:18px 22px;margin-bottom:16px}
.kind{text-transform:uppercase;letter-spacing:.08em;font-size:12px;color:var(--muted);font-weight:600}
h1{font-size:22px;margin:2px 0 14px;overflow-wrap:anywhere}
.verdict{padding:12px 16px;border-radius:8px;margin:0 0 16px;font-size:17px;font-weight:700;color:#fff}
.verdict span{font-weight:400;opacity:.92;margin-left:8px;font-size:14px}
.v-ready{background:var(--ok)}.v-warnings{background:#b86e00}.v-blocked{background:var(--bad)}
dl{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:8px 20px;margin:0}
dt{font-size:11.5px;text-transform:uppercase;letter-spacing:.05em;color:var(--muted)}
dd{margin:0;overflow-wrap:anywhere}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:7px 9px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:12px;color:var(--muted);font-weight:600;background:#f7f9fb}
td.name{white-space:nowrap;font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:12.5px}
td.detail{overflow-wrap:anywhere}
.pill{display:inline-block;padding:2px 10px;border-radius:10px;font-size:11.5px;font-weight:700;letter-spacing:.04em}
.s-ok{background:var(--ok-bg);color:var(--ok)}.s-fail{background:var(--bad-bg);color:var(--bad)}
.s-warn{background:var(--warn-bg);color:var(--warn)}.s-info{background:var(--info-bg);color:var(--info)}
tr.r-fail td{background:#fffafa}tr.r-warn td{background:#fffdf7}
details{margin-top:4px}summary{cursor:pointer;color:var(--muted);font-size:12px}
pre{margin:4px 0 0;font-size:11.5px;white-space:pre-wrap;overflow-wrap:anywhere;background:#f7f9fb;padding:6px 8px;border-radius:4px}
footer{color:var(--muted);font-size:12px;text-align:center}
@media print{body{background:#fff}header,.panel{border-radius:0}tr{break-inside:avoid}details{display:none}}
"""


def render_html(doc: dict) -> str:
    n = counts(doc)
    status = str(doc.get("status"))
    meta = [
        ("created", doc.get("created_at")),
        ("operator", doc.get("operator")),
        ("target", doc.get("target")),
        ("source", doc.get("source")),
        ("mapping", doc.get("mapping")),
        ("etl", doc.get("etl_version")),
    ]
    rows = []
    for c in doc.get("checks") or []:
        s = str(c.get("status"))
        data = c.get("data") or {}
        extra = (
            "<details><summary>data</summary><pre>"
            + e(json.dumps(data, indent=1, ensure_ascii=False, default=str))
            + "</pre></details>"
            if data
            else ""
        )
        rows.append(
            f'<tr class="r-{e(s)}"><td class="name">{e(c.get("name"))}</td>'
            f'<td><span class="pill s-{e(s)}">{e(s.upper())}</span></td>'
            f'<td class="detail">{e(c.get("detail"))}{extra}</td></tr>'
        )
    body = (
        f'<header><div class="kind">etl preflight report</div><h1>{e(doc.get("id"))}</h1>'
        f'<div class="verdict v-{e(status)}">{e(status.upper())}'
        f"<span>{e(VERDICT.get(status, ''))} · {n['fail']} failed, {n['warn']} warnings,"
        f" {n['ok']} ok, {n['info']} info</span></div><dl>"
        + "".join(f"<div><dt>{e(k)}</dt><dd>{e(v)}</dd></div>" for k, v in meta)
        + "</dl></header>"
        + '<section class="panel"><table><thead><tr><th>check</th><th>status</th>'
        + "<th>detail</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></section>"
        + f"<footer>etl {e(doc.get('etl_version'))} · preflight report schema"
        f" {e(doc.get('report_schema_version'))} · the .json report next to this file holds"
        " the same checks with their data</footer>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Preflight {e(doc.get('id'))}: {e(status)}</title><style>{CSS}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )
