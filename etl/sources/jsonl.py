"""arangoexport output as a Source: `<collection>.jsonl[.gz]` or `<collection>.json[.gz]` files.

`JsonlSource(path)` takes a directory of such files (arangoexport's `export/`; `ENCRYPTION` is
honoured as in a dump, other files are ignored) or one file. The collection name is the file
name without `.jsonl`/`.json` and `.gz` (a `--custom-query` export is the collection `query`).

- `jsonl`: one document per line. `json`: arangoexport's array layout, `[`, then each document on
  its own line followed by `,`, then `]` (an empty export is `[\\n]`); a whole array on one line is
  not that layout and is refused.
- The collection type is not recorded by arangoexport: a collection is `edge` only if every row
  has string `_from` and `_to`.
- Every row must be an object with a string `_key`; anything else (a custom query can return
  numbers or strings) is a PermanentError naming the file and line.
- gzip by magic bytes, streaming, BOM/CRLF, truncated tails, positions, duplicates (last wins),
  counts: all shared with the dump source (etl.sources.dump.FileSource, etl.sources.lines).
"""

from __future__ import annotations

import logging
from pathlib import Path

from etl.errors import PermanentError
from etl.sources.dump import FileSource, _check_encryption, _Collection
from etl.sources.lines import CHUNK_SIZE, SKIP

log = logging.getLogger("etl.sources.jsonl")

_SUFFIXES = (".jsonl.gz", ".jsonl", ".json.gz", ".json")
_ARRAY_PUNCTUATION = (b"[", b"]", b"[]")


class JsonlSource(FileSource):
    _log = log
    envelopes = False
    expect = b'{["-0123456789tfn'  # any JSON value: a non-object row gets a precise error, not "encrypted"

    def __init__(
        self,
        path,
        *,
        allow_truncated: bool = False,
        max_line_bytes: int | None = None,
        chunk_size: int = CHUNK_SIZE,
    ):
        self.path = Path(path)
        self.allow_truncated = allow_truncated
        self.max_line_bytes = max_line_bytes
        self.chunk_size = chunk_size
        if self.path.is_dir():
            _check_encryption(self.path)
            files = sorted(
                p for p in self.path.iterdir() if p.is_file() and p.name.endswith(_SUFFIXES)
            )
        elif self.path.is_file():
            if not self.path.name.endswith(_SUFFIXES):
                raise PermanentError(
                    f"{self.path}: expected a .jsonl, .jsonl.gz, .json or .json.gz file"
                )
            files = [self.path]
        else:
            raise PermanentError(f"{self.path} does not exist")
        self._collections: dict[str, _Collection] = {}
        for f in files:
            name = _collection_name(f.name)
            if name in self._collections:
                other = self._collections[name].files[0].name
                raise PermanentError(
                    f"{self.path}: both {other} and {f.name} hold collection {name!r}; "
                    "which one is current is ambiguous",
                    hint="delete the stale one",
                )
            self._collections[name] = _Collection(name, None, [f], f)
        if not self._collections:
            raise PermanentError(f"{self.path} holds no .jsonl/.json export files")
        self.description = f"arangoexport {self.path}"

    def _line_decoder(self, path: Path, decode):
        if not _is_array_file(path):
            return decode

        def array_line(line: bytes):
            s = line.strip()
            if s in _ARRAY_PUNCTUATION:
                return SKIP
            if s.endswith(b","):
                s = s[:-1]
            return decode(s)

        return array_line

    def _structural(self, path: Path):
        return _is_punctuation if _is_array_file(path) else None


def _is_array_file(path: Path) -> bool:
    return path.name.endswith((".json", ".json.gz"))


def _is_punctuation(line: bytes) -> bool:
    return line.strip() in _ARRAY_PUNCTUATION


def _collection_name(filename: str) -> str:
    for suffix in _SUFFIXES:
        if filename.endswith(suffix):
            return filename[: -len(suffix)]
    raise ValueError(filename)  # pragma: no cover
