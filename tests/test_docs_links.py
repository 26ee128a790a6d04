"""Every relative markdown link in the repository's documentation (README.md, docs/*.md) points
to a file that exists, and, when it names a heading (#anchor), to a heading of that file."""

from __future__ import annotations

import re
from pathlib import Path

from tests.helpers import REPO

# [text](target) and ![alt](target); the target ends at whitespace (a "title" may follow)
_LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+[^)]*)?\)")
_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")  # [label]: target
_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def _prose_lines(text: str, *, code_spans: bool = False) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks; inline code spans blanked unless
    code_spans (a heading's code is part of its anchor, a link in code is no link)."""
    out, fence = [], None
    for n, line in enumerate(text.splitlines(), 1):
        m = _FENCE.match(line)
        if m:
            fence = None if fence == m.group(1) else (fence or m.group(1))
            continue
        if fence is None:
            blank = not code_spans
            out.append(
                (n, re.sub(r"`[^`]*`", lambda s: " " * len(s.group()), line) if blank else line)
            )
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped (letters,
    digits, '_' and '-' stay), spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a markdown file's headings (a repeated one gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in _prose_lines(path.read_text(encoding="utf-8"), code_spans=True):
        m = _HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2).replace("`", ""))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(doc: Path) -> list[str]:
    """What is wrong with the relative links of `doc`, one line each ('file:line: why')."""
    problems = []
    for n, line in _prose_lines(doc.read_text(encoding="utf-8")):
        m = _DEFINITION.match(line)
        targets = [m.group(1)] if m else _LINK.findall(line)
        for target in targets:
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, mailto:, ...
                continue
            path_part, _, anchor = target.partition("#")
            dest = (doc.parent / path_part).resolve() if path_part else doc
            where = f"{doc.relative_to(REPO) if doc.is_relative_to(REPO) else doc.name}:{n}"
            if not dest.exists():
                problems.append(f"{where}: {target} -> no such file")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                problems.append(f"{where}: {target} -> no heading #{anchor} in {dest.name}")
    return problems


def documentation() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_every_relative_link_in_the_docs_points_to_a_file_and_heading_that_exist():
    docs = documentation()
    assert len(docs) > 1 and all(d.exists() for d in docs)
    problems = [p for d in docs for p in broken_links(d)]
    assert not problems, "\n".join(problems)


def test_the_check_finds_a_missing_file_a_missing_heading_and_ignores_code(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other page\n\n## The `flow` (etl/sync/)\n")
    doc = tmp_path / "README.md"
    doc.write_text(
        "[ok](docs/other.md) [ok too](docs/other.md#the-flow-etlsync) [self](#top)\n"
        "# Top\n"
        "[gone](docs/missing.md) [bad anchor](docs/other.md#nowhere) [web](https://x.org/y)\n"
        "`[in code](docs/missing-too.md)`\n"
        "```\n[in a block](docs/missing-three.md)\n```\n"
        "[defined]: docs/also-missing.md\n"
    )
    problems = broken_links(doc)
    assert len(problems) == 3, problems
    assert "docs/missing.md -> no such file" in problems[0]
    assert "no heading #nowhere in other.md" in problems[1]
    assert "docs/also-missing.md -> no such file" in problems[2]
    assert slug("Sources (etl/sources/)") == "sources-etlsources"
    assert anchors(tmp_path / "docs" / "other.md") == {"other-page", "the-flow-etlsync"}


def test_readme_is_a_front_door_under_300_lines_linking_every_docs_page():
    """What it is, install, quick start, commands, figures; runbooks and design notes in docs/."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) < 300
    heads = [m.group(2) for _, ln in _prose_lines(text) if (m := _HEADING.match(ln))]
    for needed in ("Install", "Quick start", "Commands", "Figures", "Documentation"):
        assert needed in heads, heads
    linked = {
        Path(t.partition("#")[0]).name for _, ln in _prose_lines(text) for t in _LINK.findall(ln)
    }
    pages = {p.name for p in documentation()[1:]}
    assert pages <= linked, pages - linked
