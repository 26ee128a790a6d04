"""arangoexport output as a Source: a directory of `<collection>.jsonl[.gz]` / `.json[.gz]` files
(`json` = arangoexport's array layout, one document per line) or one such file. A collection is
`edge` only if every row has string `_from` and `_to`. Reading and positions: etl.sources.files.
"""

from __future__ import annotations

import logging
from pathlib import Path

from etl.errors import PermanentError
from etl.sources.files import FileCollection, FileSource, check_encryption
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
            check_encryption(self.path)
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
        self._collections: dict[str, FileCollection] = {}
        for f in files:
            name = _collection_name(f.name)
            if name in self._collections:
                other = self._collections[name].files[0].name
                raise PermanentError(
                    f"{self.path}: both {other} and {f.name} hold collection {name!r}; "
                    "which one is current is ambiguous",
                    hint="delete the stale one",
                )
            self._collections[name] = FileCollection(name, None, [f], f)
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
