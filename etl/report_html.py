"""reports/<run id>.html: one self-contained page for the operator reading last night's run.

Inline CSS and an inline SVG throughput chart; no script, no fonts, no network. Renders the same
dict as the .json report (a migrate or dry-run summary from RunSummary.asdict(), or a reconcile
summary from ReconcileSummary.asdict()) and only what is present, so an older or partial report
still renders. Every value from the data goes through html.escape: it holds source data (keys,
names, reasons) that must never become markup.
"""

from __future__ import annotations

import html
import math
from datetime import datetime
from typing import Any

INLINE_ITEMS = 100  # keys / differences shown per list; the rest are counted (all are in the .json)
PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#76b7b2",
    "#b07aa1",
    "#9c755f",
    "#edc948",
    "#ff9da7",
    "#bab0ac",
    "#59a14f",
    "#e15759",
)

# (key, label) in display order; a count is shown when the collection has it
COUNT_ORDER = (
    ("source_count", "source"),
    ("checked", "checked"),
    ("read", "read"),
    ("inserted", "inserted"),
    ("updated", "updated"),
    ("unchanged", "unchanged"),
    ("loaded", "loaded"),
    ("rejected", "rejected"),
    ("unmapped", "unmapped"),
    ("dangling", "dangling"),
    ("missing", "missing"),
    ("extra", "extra"),
    ("differing", "differing"),
)
ATTENTION = {"rejected", "dangling", "missing", "extra", "differing"}


def e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def num(value: Any) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}".rstrip("0").rstrip(".")
    return e(value)


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _when(value: Any) -> str:
    t = _parse_time(value)
    if t is None:
        return num(value)
    zone = t.strftime("%Z") if t.tzinfo else ""
    return e(t.strftime("%Y-%m-%d %H:%M:%S") + (f" {zone}" if zone else ""))


def duration(seconds: float | None, missing: str = "–") -> str:
    """12.3 s, 45 s, 3 min 07 s, 1 h 02 min 05 s: how every report writes a duration."""
    if seconds is None:
        return missing
    s = int(round(seconds))
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{s} s"
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h} h {m:02d} min {s:02d} s" if h else f"{m} min {s:02d} s"


# -- per-collection facts ---------------------------------------------------------------------


def _counts(c: dict) -> dict[str, int]:
    """The collection's counts, flattened over both summary shapes."""
    counts: dict[str, Any] = c["counts"] if isinstance(c.get("counts"), dict) else {}
    out: dict[str, int] = {}
    for key in ("source_count", "checked"):
        if key in c:
            out[key] = _int(c[key])
    for key, value in counts.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = _int(value)
    if "loaded" not in out and any(k in out for k in ("inserted", "updated", "unchanged")):
        out["loaded"] = out.get("inserted", 0) + out.get("updated", 0) + out.get("unchanged", 0)
    dangling = c.get("dangling_references")
    if "dangling" not in out and isinstance(dangling, dict) and dangling:
        out["dangling"] = sum(_int(v) for v in dangling.values())
    for key in ("missing", "extra", "differing"):
        if isinstance(c.get(key), list):
            out[key] = len(c[key])
    return out


def _balance(c: dict, counts: dict[str, int]) -> tuple[str, int, int, bool]:
    """(label of the left side, left side, loaded + rejected + unmapped, balanced)."""
    base_label, base = "source", counts.get("source_count", 0)
    if "checked" in counts and counts["checked"] != base:
        base_label, base = "checked", counts["checked"]
    total = counts.get("loaded", 0) + counts.get("rejected", 0) + counts.get("unmapped", 0)
    balanced = c.get("balanced")
    if not isinstance(balanced, bool):
        balanced = base == total
    return base_label, base, total, balanced


def _differences(c: dict, counts: dict[str, int]) -> int:
    n = counts.get("missing", 0) + counts.get("extra", 0) + counts.get("differing", 0)
    if isinstance(c.get("differences"), int) and not isinstance(c.get("differences"), bool):
        n = max(n, c["differences"])
    return n


def classify(c: dict) -> tuple[str, str, str]:
    """(css class ok|bad|none, big label, one-line explanation) for a collection."""
    status = str(c.get("status") or "").lower()
    counts = _counts(c)
    label, base, total, balanced = _balance(c, counts)
    diffs = _differences(c, counts)
    if status == "unmapped" or c.get("kind") == "unmapped":
        return "none", "UNMAPPED", "not migrated by the mapping"
    if status in ("pending", ""):
        return "none", "NOT MIGRATED", "this run did not process the collection"
    if status == "failed":
        return "bad", "FAILED", "the collection failed; see the error above"
    if status == "interrupted":
        return (
            "bad",
            "INTERRUPTED",
            "stopped at a batch boundary; continue with etl migrate --resume",
        )
    if not balanced:
        also = f"; {diffs:,} missing, extra or differing row(s)" if diffs else ""
        return (
            "bad",
            "UNBALANCED",
            f"{label} {base:,} ≠ loaded + rejected + unmapped {total:,}{also}",
        )
    if diffs or status == "differences":
        return "bad", "DIFFERENCES", f"{diffs:,} missing, extra or differing row(s)"
    note = "counts balance"
    if status == "match":
        note = "counts balance and every checked row matches"
    if counts.get("rejected"):
        note += f"; {counts['rejected']:,} rejected (see below)"
    return "ok", "MATCH" if status == "match" else "OK", note


# -- page pieces ------------------------------------------------------------------------------


def _meta(doc: dict) -> str:
    started, finished = _parse_time(doc.get("started_at")), _parse_time(doc.get("finished_at"))
    took = None
    if started and finished:
        try:
            took = (finished - started).total_seconds()
        except TypeError:
            took = None
    rows = [
        ("command", e(doc.get("command"))),
        ("dry run", "yes — nothing was committed" if doc.get("dry_run") else "no"),
        (
            "state",
            f'<span class="state state-{e(_state_class(doc.get("state")))}">{e(doc.get("state"))}</span>',
        ),
        ("started", _when(doc.get("started_at"))),
        ("finished", _when(doc.get("finished_at"))),
        ("duration", e(duration(took))),
    ]
    if doc.get("estimated_seconds") is not None:
        rows.append(("estimated real run", e(duration(_float(doc["estimated_seconds"])))))
    rows += [
        ("source", f"<code>{e(doc.get('source'))}</code>"),
        ("target", f"<code>{e(doc.get('target'))}</code>"),
    ]
    for key, label in (
        ("operator", "operator"),
        ("schema_version", "schema version"),
        ("server_version", "PostgreSQL"),
        ("mapping_version", "mapping version"),
        ("batch_size", "batch size"),
        ("etl_version", "etl version"),
    ):
        if doc.get(key) is not None:
            rows.append((label, num(doc[key])))
    return (
        '<dl class="meta">'
        + "".join(f"<div><dt>{e(k)}</dt><dd>{v}</dd></div>" for k, v in rows)
        + "</dl>"
    )


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _state_class(state: Any) -> str:
    s = str(state or "").lower()
    return {"finished": "ok", "running": "run", "failed": "bad", "interrupted": "bad"}.get(
        s, "other"
    )


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "es" if word.endswith("ch") else "s")


def _verdict(doc: dict, classes: list[str]) -> str:
    bad, none, ok = classes.count("bad"), classes.count("none"), classes.count("ok")
    state = str(doc.get("state") or "").lower()
    if doc.get("error") or state in ("failed", "interrupted", "running"):
        cls, head = "bad", f"Run {e(state or 'did not finish')}"
    elif bad:
        cls, head = (
            "bad",
            (
                f"{bad} of {len(classes)} collection{'s' if len(classes) != 1 else ''} "
                f"need{'s' if bad == 1 else ''} attention"
            ),
        )
    elif not ok:
        cls, head = "none", "Nothing was migrated"
    else:
        cls = "ok"
        head = (
            "Everything matches" if str(doc.get("command")) == "reconcile" else "All counts balance"
        )
        rejected = sum(
            _counts(c).get("rejected", 0)
            for c in doc.get("collections") or []
            if isinstance(c, dict)
        )
        if rejected:
            head += f" · {_plural(rejected, 'document')} rejected (see below)"
    parts = [f"{ok} ok", f"{bad} need{'s' if bad == 1 else ''} attention"] + (
        [f"{none} not migrated"] if none else []
    )
    mark = {"ok": "✓", "bad": "✗", "none": "–"}[cls]
    return (
        f'<div class="verdict st-{cls}"><span class="mark">{mark}</span><div><strong>{head}</strong>'
        f"<span>{e(', '.join(parts))}</span></div></div>"
    )


def _overview(cols: list[dict], classes: list[tuple[str, str, str]]) -> str:
    all_counts = [_counts(c) for c in cols]
    keys = [(k, lbl) for k, lbl in COUNT_ORDER if any(k in cc for cc in all_counts)]
    head = "".join(f'<th class="n">{e(lbl)}</th>' for _k, lbl in keys)
    rows = []
    for i, (c, cc, (cls, label, _note)) in enumerate(zip(cols, all_counts, classes)):
        _l, base, total, balanced = _balance(c, cc)
        check = (
            "–"
            if cls == "none"
            else '<span class="yes">✓ balanced</span>'
            if balanced
            else f'<span class="no">✗ off by {abs(base - total):,}</span>'
        )
        cells = "".join(
            f'<td class="n{" warn" if k in ATTENTION and cc.get(k) else ""}">{num(cc.get(k))}</td>'
            for k, _lbl in keys
        )
        rows.append(
            f'<tr><td><a href="#c{i}">{e(c.get("collection"))}</a></td>'
            f'<td><span class="pill st-{cls}">{e(label)}</span></td>{cells}<td>{check}</td></tr>'
        )
    return (
        f'<div class="scroll"><table class="overview"><thead><tr><th>collection</th><th>status</th>{head}'
        f"<th>source = loaded + rejected + unmapped</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _tiles(cc: dict[str, int], c: dict) -> str:
    tiles = []
    for k, lbl in COUNT_ORDER:
        if k in cc:
            warn = " warn" if k in ATTENTION and cc[k] else ""
            tiles.append(f'<div class="tile{warn}"><b>{num(cc[k])}</b><span>{e(lbl)}</span></div>')
    for k, v in cc.items():
        if k not in dict(COUNT_ORDER):
            tiles.append(f'<div class="tile"><b>{num(v)}</b><span>{e(k)}</span></div>')
    return '<div class="tiles">' + "".join(tiles) + "</div>"


def _equation(c: dict, cc: dict[str, int], cls: str) -> str:
    label, base, total, balanced = _balance(c, cc)
    mark = (
        '<span class="yes">✓ balanced</span>'
        if balanced
        else (f'<span class="no">✗ not balanced (off by {abs(base - total):,})</span>')
    )
    if cls == "none":
        mark = '<span class="muted">not checked</span>'
    return (
        f'<p class="equation"><code>{e(label)} {base:,} = loaded {cc.get("loaded", 0):,} + rejected '
        f"{cc.get('rejected', 0):,} + unmapped {cc.get('unmapped', 0):,}</code> {mark}</p>"
    )


def _timing(c: dict) -> str:
    bits = []
    if not c.get("batches") and not c.get("docs_per_second"):
        return ""
    if c.get("batches") is not None:
        bits.append(_plural(_int(c.get("batches")), "batch"))
    if c.get("seconds") is not None:
        bits.append(e(duration(_float(c.get("seconds")))))
    if c.get("docs_per_second") is not None:
        bits.append(f"{num(c.get('docs_per_second'))} docs/s")
    if c.get("bytes"):
        bits.append(f"{e(_bytes(c.get('bytes')))} read")
    return f'<p class="muted">{" · ".join(bits)}</p>' if bits else ""


def _bytes(n: Any) -> str:
    v = _float(n) or 0.0
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if v < 1024 or unit == "TiB":
            return f"{v:,.0f} {unit}" if unit == "B" else f"{v:,.1f} {unit}"
        v /= 1024
    return str(n)


def _rejects(c: dict) -> str:
    raw = c.get("rejects_by_reason")
    items: list[tuple[str, int, list]] = []
    if isinstance(raw, dict):
        items = [(r, _int(n), []) for r, n in raw.items()]
    elif isinstance(raw, list):
        for r in raw:
            if isinstance(r, dict):
                items.append(
                    (str(r.get("reason")), _int(r.get("count")), list(r.get("examples") or []))
                )
    if not items:
        return ""
    with_examples = any(examples for _r, _n, examples in items)
    rows = []
    for reason, n, examples in items:
        ex = "".join(f"<li><code>{e(x)}</code></li>" for x in examples[:INLINE_ITEMS])
        cell = (
            (
                "<td><ul class=ex>" + ex + "</ul></td>"
                if ex
                else "<td><span class=muted>–</span></td>"
            )
            if with_examples
            else ""
        )
        rows.append(f'<tr><td><code>{e(reason)}</code></td><td class="n">{n:,}</td>{cell}</tr>')
    head = "<th>examples</th>" if with_examples else ""
    return (
        "<h3>Rejects by reason <small>whole documents are in etl_rejects</small></h3>"
        f'<table class="list{"" if with_examples else " narrow"}"><thead><tr><th>reason</th>'
        f'<th class="n">count</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def _unmapped(c: dict) -> str:
    reasons = c.get("unmapped_by_reason") or []
    keys = c.get("unmapped_keys") or []
    if not reasons and not keys:
        return ""
    out = ["<h3>Not migrated</h3>"]
    if reasons:
        out.append(
            "<ul>"
            + "".join(
                f"<li>{e(r.get('reason'))}: <b>{num(r.get('count'))}</b></li>"
                if isinstance(r, dict)
                else f"<li>{e(r)}</li>"
                for r in reasons
            )
            + "</ul>"
        )
    if keys:
        out.append(
            '<div class="keys">'
            + " ".join(f"<code>{e(k)}</code>" for k in keys[:INLINE_ITEMS])
            + _more(len(keys))
            + "</div>"
        )
    return "".join(out)


def _more(n: int) -> str:
    return (
        f' <span class="more">… and {n - INLINE_ITEMS:,} more (all in the .json report)</span>'
        if n > INLINE_ITEMS
        else ""
    )


def _dangling(c: dict) -> str:
    d = c.get("dangling_references")
    if not d:
        return ""
    if isinstance(d, dict):
        body = "".join(
            f'<tr><td><code>{e(k)}</code></td><td class="n">{num(v)}</td></tr>'
            for k, v in d.items()
        )
        return (
            "<h3>Dangling references <small>the referenced document is not in the target; "
            "the reference was stored as NULL</small></h3>"
            f'<table class="list narrow"><thead><tr><th>reference</th><th class="n">count</th></tr></thead>'
            f"<tbody>{body}</tbody></table>"
        )
    return f"<h3>Dangling references</h3><p>{num(d)}</p>"


DIFF_COLUMNS = (
    ("key", "key"),
    ("document_type", "type"),
    ("table", "table"),
    ("what", "what"),
    ("fields", "fields"),
    ("paths", "paths"),
    ("source", "note"),
    ("research_key", "research key"),
    ("arango_collection", "collection"),
    ("id", "row id"),
)


def _differences_html(c: dict) -> str:
    out = []
    for name, title, hint in (
        ("missing", "Missing in the target", "in the source, not in PostgreSQL"),
        ("extra", "Extra in the target", "in PostgreSQL, not in the source"),
        ("differing", "Differing", "the stored row differs from the source"),
    ):
        items = c.get(name)
        if not isinstance(items, list) or not items:
            continue
        shown = [x if isinstance(x, dict) else {"key": x} for x in items[:INLINE_ITEMS]]
        cols = [(k, lbl) for k, lbl in DIFF_COLUMNS if any(k in x for x in shown)]
        rows = []
        for x in shown:
            cells = []
            for k, _lbl in cols:
                v = x.get(k)
                if k == "fields" and isinstance(v, list):
                    cells.append(
                        "<td>" + " ".join(f'<span class="chip">{e(f)}</span>' for f in v) + "</td>"
                    )
                elif k == "paths" and isinstance(v, list):
                    more = f' <span class="more">+{len(v) - 5}</span>' if len(v) > 5 else ""
                    cells.append(
                        '<td class="paths">'
                        + "<br>".join(f"<code>{e(p)}</code>" for p in v[:5])
                        + more
                        + "</td>"
                    )
                elif k in ("key", "id", "research_key"):
                    cells.append(f"<td><code>{e(v) if v is not None else '–'}</code></td>")
                else:
                    cells.append(f"<td>{e(v) if v is not None else '–'}</td>")
            rows.append("<tr>" + "".join(cells) + "</tr>")
        head = "".join(f"<th>{e(lbl)}</th>" for _k, lbl in cols)
        shown_note = f", the first {INLINE_ITEMS} below" if len(items) > INLINE_ITEMS else ""
        out.append(
            f'<h3 class="diff">{e(title)}: {len(items):,} <small>{e(hint)}{shown_note}</small></h3>'
            f'<div class="scroll"><table class="list diff"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
            + (
                f'<p class="more">… and {len(items) - INLINE_ITEMS:,} more {e(name)} key(s), '
                f"all listed in the .json report</p>"
                if len(items) > INLINE_ITEMS
                else ""
            )
        )
    return "".join(out)


def _by_type(c: dict) -> str:
    bt = c.get("by_type")
    if not isinstance(bt, dict) or not bt:
        return ""
    keys: list[str] = []
    for v in bt.values():
        if isinstance(v, dict):
            keys += [k for k in v if k not in keys]
    head = "".join(f'<th class="n">{e(k.replace("_", " "))}</th>' for k in keys)
    rows = "".join(
        f"<tr><td>{e(t)}</td>"
        + "".join(
            f'<td class="n{" warn" if k in ATTENTION and _int(v.get(k)) else ""}">{num(v.get(k))}</td>'
            for k in keys
        )
        + "</tr>"
        for t, v in bt.items()
        if isinstance(v, dict)
    )
    return (
        '<h3>By document type</h3><div class="scroll"><table class="list"><thead><tr><th>document type</th>'
        f"{head}</tr></thead><tbody>{rows}</tbody></table></div>"
    )


def _coverage(c: dict) -> str:
    cov = c.get("field_coverage")
    if not isinstance(cov, dict):
        return ""
    out = []
    for key, title in (
        ("columns_filled", "Columns filled"),
        ("kept_in_metadata_extra", "Kept only in metadata.extra"),
        ("absent", "Absent"),
    ):
        v = cov.get(key)
        if isinstance(v, dict) and v:
            out.append(
                f"<p><b>{e(title)}:</b> "
                + " ".join(
                    f'<span class="chip">{e(k)} <i>{num(n)}</i></span>'
                    for k, n in sorted(v.items(), key=lambda kv: str(kv[0]))
                )
                + "</p>"
            )
        elif isinstance(v, list) and v:
            out.append(
                f"<p><b>{e(title)}:</b> "
                + " ".join(f'<span class="chip">{e(k)}</span>' for k in v)
                + "</p>"
            )
    return ("<h3>Field coverage</h3>" + "".join(out)) if out else ""


def _warnings(c: dict) -> str:
    w = c.get("warnings") or []
    if not w:
        return ""
    return (
        '<h3>Warnings</h3><ul class="warnings">'
        + "".join(f"<li>{e(x)}</li>" for x in w[:INLINE_ITEMS])
        + "</ul>"
        + (_more(len(w)) if len(w) > INLINE_ITEMS else "")
    )


def _collection(i: int, c: dict, cls: str, label: str, note: str) -> str:
    cc = _counts(c)
    mark = {"ok": "✓", "bad": "✗", "none": "–"}[cls]
    kind = (
        f' <span class="muted">({e(c.get("kind"))})</span>'
        if c.get("kind") not in (None, "document")
        else ""
    )
    status = f'<span class="muted">status: {e(c.get("status"))}</span>' if c.get("status") else ""
    return (
        f'<section class="coll st-{cls}" id="c{i}">'
        f'<div class="coll-head"><div class="big st-{cls}"><span class="mark">{mark}</span>{e(label)}</div>'
        f'<div><h2>{e(c.get("collection"))}{kind}</h2><p class="note">{e(note)} {status}</p>{_timing(c)}</div></div>'
        + _tiles(cc, c)
        + _equation(c, cc, cls)
        + _differences_html(c)
        + _rejects(c)
        + _dangling(c)
        + _unmapped(c)
        + _by_type(c)
        + _coverage(c)
        + _warnings(c)
        + "</section>"
    )


# -- throughput chart -------------------------------------------------------------------------


def _nice(x: float) -> float:
    """The smallest round number (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8 times a power of ten) >= x."""
    if x <= 0:
        return 1.0
    p = 10 ** math.floor(math.log10(x))
    for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * p >= x:
            return m * p
    return 10 * p


def _nice_step(x: float) -> float:
    """A 1, 2 or 5 times a power of ten step >= x, for the batch axis."""
    p = 10 ** math.floor(math.log10(x)) if x > 0 else 1
    return next(m * p for m in (1, 2, 5, 10) if m * p >= x)


def throughput_svg(cols: list[dict]) -> str:
    # (x index, collection index, seq, docs, seconds, rate)
    series: list[tuple[int, int, Any, float, float | None, float | None]] = []
    names = []
    for ci, c in enumerate(cols):
        stats = c.get("batch_stats")
        if not isinstance(stats, list) or not stats:
            continue
        names.append((ci, c.get("collection")))
        for b in sorted(
            (b for b in stats if isinstance(b, dict)), key=lambda b: _int(b.get("seq"))
        ):
            docs, secs = _float(b.get("docs")) or 0.0, _float(b.get("seconds"))
            rate = docs / secs if secs else None
            series.append((len(series) + 1, ci, b.get("seq"), docs, secs, rate))
    if not series:
        return ""
    W, H, L, R, T, B = 1120, 320, 78, 20, 16, 54
    pw, ph = W - L - R, H - T - B
    n = len(series)
    rates = [s[5] for s in series if s[5] is not None]
    ymax = _nice(max(rates) * 1.05) if rates else 1.0
    color = {ci: PALETTE[k % len(PALETTE)] for k, (ci, _n) in enumerate(names)}
    step = pw / n

    def X(i):
        return L + (i - 0.5) * step

    def Y(v):
        return T + ph - (v / ymax) * ph

    out = [
        f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="throughput per batch">',
        f'<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="#fbfcfd" stroke="#d5dae1"/>',
    ]
    for k in range(6):  # y grid and ticks
        v = ymax * k / 5
        y = Y(v)
        out.append(
            f'<line x1="{L}" x2="{L + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e7ec"/>'
            f'<text x="{L - 8}" y="{y + 4:.1f}" text-anchor="end" class="tick">{num(_tick(v))}</text>'
        )
    xstep = max(1, int(_nice_step(n / 10)))
    for i in range(0, n + 1, xstep):  # x ticks
        if i == 0:
            continue
        out.append(
            f'<line x1="{X(i):.1f}" x2="{X(i):.1f}" y1="{T + ph}" y2="{T + ph + 5}" stroke="#8a94a3"/>'
            f'<text x="{X(i):.1f}" y="{T + ph + 19}" text-anchor="middle" class="tick">{i}</text>'
        )
    prev = None
    for i, ci, _seq, _d, _s, _r in series:  # boundaries between collections
        if prev is not None and ci != prev:
            x = L + (i - 1) * step
            out.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{T}" y2="{T + ph}" stroke="#9aa4b1" stroke-dasharray="3 3"/>'
            )
        prev = ci
    if n <= 240:
        bw = min(max(step * 0.78, 0.6), 44.0)
        for i, ci, seq, docs, secs, rate in series:
            if rate is None:
                continue
            y = Y(rate)
            out.append(
                f'<rect x="{X(i) - bw / 2:.2f}" y="{y:.1f}" width="{bw:.2f}" height="{T + ph - y:.1f}" '
                f'fill="{color[ci]}"><title>{e(cols[ci].get("collection"))} batch {e(seq)}: '
                f"{num(int(docs))} docs in {num(secs)} s = {num(rate)} docs/s</title></rect>"
            )
    else:
        for ci, _name in names:
            pts = " ".join(
                f"{X(i):.1f},{Y(rate):.1f}"
                for i, c2, _q, _d, _s, rate in series
                if c2 == ci and rate is not None
            )
            out.append(
                f'<polyline points="{pts}" fill="none" stroke="{color[ci]}" stroke-width="1.6"/>'
            )
    medians = {}
    for ci, name in names:  # the median of each collection, across its span
        xs = [i for i, c2, *_r in series if c2 == ci]
        rs = sorted(r for _i, c2, _q, _d, _s, r in series if c2 == ci and r is not None)
        if not rs:
            continue
        medians[ci] = med = (rs[(len(rs) - 1) // 2] + rs[len(rs) // 2]) / 2
        out.append(
            f'<line x1="{L + (xs[0] - 1) * step:.1f}" x2="{L + xs[-1] * step:.1f}" y1="{Y(med):.1f}" '
            f'y2="{Y(med):.1f}" stroke="#1f2933" stroke-width="1.5" stroke-dasharray="6 3" opacity=".75">'
            f"<title>{e(name)}: median {num(med)} docs/s</title></line>"
        )
    out.append(
        f'<line x1="{L}" x2="{L + pw}" y1="{T + ph}" y2="{T + ph}" stroke="#5b6675"/>'
        f'<line x1="{L}" x2="{L}" y1="{T}" y2="{T + ph}" stroke="#5b6675"/>'
    )
    out.append(
        f'<text x="{L + pw / 2:.0f}" y="{H - 8}" text-anchor="middle" class="axis">'
        f"batch (in run order, across collections)</text>"
        f'<text transform="translate(18 {T + ph / 2:.0f}) rotate(-90)" text-anchor="middle" class="axis">'
        f"documents / second</text></svg>"
    )
    legend = "".join(
        f'<span><i style="background:{color[ci]}"></i>{e(name)} '
        f"<small>{_plural(sum(1 for s in series if s[1] == ci), 'batch')}"
        + (f", median {medians[ci]:,.0f} docs/s" if ci in medians else "")
        + "</small></span>"
        for ci, name in names
    )
    legend += '<span><i class="median"></i><small>median per collection</small></span>'
    total_docs = sum(s[3] for s in series)
    total_secs = sum(s[4] or 0 for s in series)
    overall = f"{total_docs / total_secs:,.0f} docs/s overall" if total_secs else ""
    return (
        f'<section class="panel"><h2>Throughput per batch <small>{_plural(n, "batch")} · {num(int(total_docs))} docs · '
        f"{e(duration(total_secs))} in batches{' · ' + overall if overall else ''}</small></h2>"
        f'<div class="legend">{legend}</div>{"".join(out)}</section>'
    )


def _tick(v: float) -> float | int:
    return int(v) if float(v).is_integer() else round(v, 2)


# -- the page ---------------------------------------------------------------------------------

CSS = """
:root{--ok:#1e8e3e;--ok-bg:#e6f4ea;--bad:#c5221f;--bad-bg:#fce8e6;--none:#6b7280;--none-bg:#eef0f3;
--ink:#1f2933;--muted:#5f6b7a;--line:#dde2e8;--warn-bg:#fff4e0;--warn:#8a5300}
*{box-sizing:border-box}
body{margin:0;background:#f3f5f8;color:var(--ink);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans","Liberation Sans",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:24px 24px 40px}
code{font-family:ui-monospace,"DejaVu Sans Mono","Liberation Mono",Menlo,Consolas,monospace;font-size:12.5px;overflow-wrap:anywhere}
h1{font-size:22px;margin:2px 0 14px;overflow-wrap:anywhere}
h2{font-size:18px;margin:0}
h2 small,h3 small{font-weight:400;color:var(--muted);font-size:12.5px;margin-left:6px}
h3{font-size:14.5px;margin:20px 0 8px}
h2.sec{margin-bottom:12px}
.kind{text-transform:uppercase;letter-spacing:.08em;font-size:12px;color:var(--muted);font-weight:600}
.badge{display:inline-block;margin-left:8px;padding:1px 8px;border-radius:10px;background:#fff1c2;color:#7a5200;letter-spacing:.04em}
header.top,.panel,.coll{background:#fff;border:1px solid var(--line);border-radius:10px;padding:18px 22px;margin-bottom:16px}
.verdict{display:flex;align-items:center;gap:14px;padding:12px 16px;border-radius:8px;margin:0 0 16px}
.verdict .mark{font-size:28px;font-weight:700;line-height:1}
.verdict strong{display:block;font-size:18px}
.verdict span{color:var(--ink)}
.st-ok.verdict,.big.st-ok,.pill.st-ok{background:var(--ok);color:#fff}
.st-bad.verdict,.big.st-bad,.pill.st-bad{background:var(--bad);color:#fff}
.st-none.verdict,.big.st-none,.pill.st-none{background:var(--none-bg);color:var(--none)}
.verdict.st-ok span,.verdict.st-bad span{color:#fff;opacity:.92}
.meta{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:8px 20px;margin:0}
.meta div{min-width:0}
.meta dt{font-size:11.5px;text-transform:uppercase;letter-spacing:.05em;color:var(--muted)}
.meta dd{margin:0;overflow-wrap:anywhere}
.state{font-weight:700}.state-ok{color:var(--ok)}.state-bad{color:var(--bad)}
.error{margin-top:14px;padding:10px 14px;border-left:4px solid var(--bad);background:var(--bad-bg);border-radius:4px}
.sample{margin-top:14px;padding:10px 14px;border-left:4px solid #d39e00;background:var(--warn-bg);border-radius:4px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:6px 9px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:12px;color:var(--muted);font-weight:600;background:#f7f9fb}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.warn{background:var(--warn-bg);color:var(--warn);font-weight:600}
.overview a{color:var(--ink);font-weight:600;text-decoration:none}
.pill{display:inline-block;padding:2px 10px;border-radius:10px;font-size:11.5px;font-weight:700;letter-spacing:.04em;white-space:nowrap}
.yes{color:var(--ok);font-weight:600;white-space:nowrap}.no{color:var(--bad);font-weight:700;white-space:nowrap}
.muted{color:var(--muted)}
.coll{border-left:8px solid var(--none)}
.coll.st-ok{border-left-color:var(--ok)}.coll.st-bad{border-left-color:var(--bad)}
.coll-head{display:flex;gap:18px;align-items:center;margin-bottom:14px}
.coll-head p{margin:2px 0}
.big{min-width:190px;text-align:center;padding:14px 16px;border-radius:8px;font-size:22px;font-weight:800;letter-spacing:.05em}
.big .mark{margin-right:8px}
.note{font-weight:600}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(112px,1fr));gap:8px}
.tile{border:1px solid var(--line);border-radius:8px;padding:8px 10px;background:#fafbfc}
.tile b{display:block;font-size:19px;font-variant-numeric:tabular-nums}
.tile span{font-size:12px;color:var(--muted)}
.tile.warn{background:var(--warn-bg);border-color:#f0c36d}.tile.warn b{color:var(--warn)}
.equation{margin:12px 0 0}
.equation code{background:#f1f3f6;padding:3px 8px;border-radius:4px;margin-right:8px}
ul.ex{margin:0;padding-left:16px}
.chip{display:inline-block;background:#eef2f7;border:1px solid #d8dfe8;border-radius:10px;padding:0 8px;margin:1px 2px;font-size:12px}
.chip i{font-style:normal;color:var(--muted)}
h3.diff{color:var(--bad)}
table.narrow{width:auto;min-width:320px}
table.diff td{padding:3px 9px}
.keys{line-height:1.9}.keys code{background:#f1f3f6;padding:1px 5px;border-radius:3px}
.more{color:var(--muted);font-style:italic}
td.paths code{font-size:11.5px}
.legend{display:flex;flex-wrap:wrap;gap:6px 18px;margin:10px 0 4px;font-size:13px}
.legend i{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:6px;vertical-align:-1px}
.legend small{color:var(--muted)}
.legend i.median{background:none;border-top:2px dashed #1f2933;height:0;width:18px;vertical-align:3px}
svg.chart{width:100%;height:auto;display:block}
svg .tick{font-size:11px;fill:#5f6b7a}
svg .axis{font-size:12.5px;fill:#1f2933;font-weight:600}
footer{color:var(--muted);font-size:12px;text-align:center}
.scroll{overflow-x:auto}
.overview th:last-child{min-width:150px}
@media screen and (max-width:760px){.coll-head{flex-direction:column;align-items:stretch}.big{min-width:0}}
@media print{
 *{-webkit-print-color-adjust:exact;print-color-adjust:exact}
 body{background:#fff;font-size:10.5px}
 th,td{padding:3px 5px}
 th{font-size:9.5px}
 code{font-size:10px}
 .overview th:last-child{min-width:0}
 .overview td,.overview th{padding:3px 3px;font-size:9.5px}
 .pill{font-size:8.5px;padding:1px 5px}
 .meta{grid-template-columns:repeat(4,1fr);gap:4px 12px}
 .meta dt{font-size:9px}.chip{font-size:9.5px}.legend{font-size:10.5px}.verdict strong{font-size:15px}
 .scroll{overflow:visible}
 .big{min-width:130px;font-size:16px;padding:8px 10px}
 .tiles{grid-template-columns:repeat(auto-fill,minmax(80px,1fr));gap:5px}
 .tile{padding:4px 6px}.tile b{font-size:14px}
 h1{font-size:18px}h2{font-size:15px}h3{font-size:12.5px;margin:12px 0 5px}
 main{max-width:none;padding:0}
 header.top,.panel,.coll{border-radius:0;box-shadow:none;margin-bottom:10px;padding:10px 12px}
 .panel,.coll-head,.tiles,tr,.verdict{break-inside:avoid}
 .coll{break-before:auto}
 a{color:inherit;text-decoration:none}
}
@page{margin:14mm}
"""


def render_html(doc: dict) -> str:
    """The whole page for one report dict (migrate, dry run or reconcile)."""
    cols = [c for c in (doc.get("collections") or []) if isinstance(c, dict)]
    classes = [classify(c) for c in cols]
    command = str(doc.get("command") or "run")
    kind = "Dry run" if doc.get("dry_run") else command.capitalize()
    title = f"{kind} report: {doc.get('run_id')}"
    badge = '<span class="badge">DRY RUN · nothing committed</span>' if doc.get("dry_run") else ""
    parts = [
        f'<header class="top"><div class="kind">etl {e(kind)} report{badge}</div>',
        f"<h1>{e(doc.get('run_id'))}</h1>",
        _verdict(doc, [k[0] for k in classes]),
        _meta(doc),
    ]
    if doc.get("error"):
        parts.append(f'<div class="error"><b>Error:</b> <code>{e(doc["error"])}</code></div>')
    sample = doc.get("sample")
    if isinstance(sample, dict):
        parts.append(
            f'<div class="sample"><b>Sample:</b> only {num(sample.get("percent"))}% of the keys were '
            f"checked ({num(sample.get('buckets_checked'))} of {num(sample.get('buckets_total'))} key "
            f"ranges, seed {num(sample.get('seed'))}); the counts are for those keys.</div>"
        )
    parts.append("</header>")
    if cols:
        parts.append(
            '<section class="panel"><h2 class="sec">Collections</h2>'
            + _overview(cols, classes)
            + "</section>"
        )
        parts.append(throughput_svg(cols))
        for i, (c, (cls, label, note)) in enumerate(zip(cols, classes)):
            parts.append(_collection(i, c, cls, label, note))
    else:
        parts.append(
            '<section class="panel"><p class="muted">This report lists no collections.</p></section>'
        )
    foot = " · ".join(
        x
        for x in (
            f"etl {e(doc['etl_version'])}" if doc.get("etl_version") else "",
            f"report schema {e(doc['report_schema_version'])}"
            if doc.get("report_schema_version") is not None
            else "",
            "the .json report next to this file holds every key",
        )
        if x
    )
    parts.append(f"<footer>{foot}</footer>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)}</title><style>{CSS}</style></head><body><main>"
        + "".join(parts)
        + "</main></body></html>\n"
    )
