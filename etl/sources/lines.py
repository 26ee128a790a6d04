"""Newline-delimited JSON files read in bounded memory, for the file sources: gzip by magic bytes,
lines split only on b"\\n", BOM and CRLF handled, a truncated tail an error (or dropped).
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from etl.errors import PermanentError

GZIP_MAGIC = b"\x1f\x8b"
BOM = b"\xef\xbb\xbf"
CHUNK_SIZE = 1 << 20
SKIP = object()  # a decode function returns SKIP for a line that holds no record (e.g. "[" or "]")
SKIPPED = object()  # iter_records yields it in place of a record it was asked to skip undecoded


class _Truncated(Exception):
    def __init__(self, offset: int):
        self.offset = offset


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def _open(path: Path):
    f = open(path, "rb")
    if f.read(2) == GZIP_MAGIC:
        f.seek(0)
        return gzip.GzipFile(fileobj=f, mode="rb"), f
    f.seek(0)
    return f, f


# read1(): a chunk as soon as it is decompressed, so a truncated gzip stream gives up every
# complete line before the EOFError (read(n) would drop the partial chunk it was assembling).


def iter_lines(
    path: Path,
    *,
    chunk_size: int = CHUNK_SIZE,
    expect: bytes = b"{",
    max_line_bytes: int | None = None,
) -> Iterator[tuple[int, int, bytes, bool]]:
    """(byte offset, line number, line, complete) for every non-blank line.

    `complete` is False only for a last line without b"\\n". Raises _Truncated(offset) when a
    gzip stream ends early; PermanentError when the first content byte is not in `expect`
    (unreadable, possibly encrypted) or a line exceeds `max_line_bytes`.
    """
    path = Path(path)
    stream, raw = _open(path)
    try:
        pending: list[bytes] = []
        pending_len = 0
        offset = 0  # decompressed offset of the current line's first byte
        lineno = 1
        first = True
        checked = False
        while True:
            try:
                chunk = stream.read1(chunk_size)
            except EOFError:
                raise _Truncated(offset) from None
            except (gzip.BadGzipFile, zlib.error, OSError) as e:
                raise PermanentError(f"{path}: unreadable gzip data ({e})") from None
            if not chunk:
                break
            if first:
                first = False
                if chunk.startswith(BOM):
                    chunk = chunk[3:]
                    offset = 3
            parts = chunk.split(b"\n")
            tail = parts.pop()
            for part in parts:
                if pending:
                    pending.append(part)
                    line = b"".join(pending)
                    pending, pending_len = [], 0
                else:
                    line = part
                n = len(line) + 1
                if line.endswith(b"\r"):
                    line = line[:-1]
                if line.strip():
                    if not checked:
                        checked = True
                        _check_first(path, line, expect)
                    if max_line_bytes is not None and len(line) > max_line_bytes:
                        raise PermanentError(
                            f"{path}: line {lineno} (byte offset {offset}) is {len(line)} bytes, over the "
                            f"limit of {max_line_bytes}"
                        )
                    yield offset, lineno, line, True
                offset += n
                lineno += 1
            if tail:
                pending.append(tail)
                pending_len += len(tail)
                if max_line_bytes is not None and pending_len > max_line_bytes:
                    raise PermanentError(
                        f"{path}: line {lineno} (byte offset {offset}) is over the limit of {max_line_bytes} bytes"
                    )
        if pending:
            line = b"".join(pending)
            if line.endswith(b"\r"):
                line = line[:-1]
            if line.strip():
                if not checked:
                    _check_first(path, line, expect)
                yield offset, lineno, line, False
    finally:
        stream.close()
        raw.close()


def _check_first(path: Path, line: bytes, expect: bytes) -> None:
    c = line.lstrip()[:1]
    if c and c not in expect:
        raise PermanentError(
            f"{path} is unreadable, possibly encrypted (it starts with {line[:8]!r}, expected JSON)"
        )


def iter_records(
    path: Path,
    decode: Callable[[bytes], Any],
    *,
    allow_truncated: bool = False,
    warn: Callable[[str], None] | None = None,
    skip: int = 0,
    chunk_size: int = CHUNK_SIZE,
    expect: bytes = b"{",
    max_line_bytes: int | None = None,
    structural: Callable[[bytes], bool] | None = None,
) -> Iterator[tuple[int, int, int, Any]]:
    """(byte offset, line number, bytes consumed, decoded record) for every record of a file.

    Lines for which `structural(line)` is true (e.g. the "[" and "]" of a JSON array export) are
    not records: never decoded, never counted, never skipped over.

    The first `skip` records are read but not decoded (their record is SKIPPED). A line that does
    not decode is a PermanentError with file, line and offset; an undecodable last line without
    its newline, or an early end of a gzip stream, is a truncated file (see the module doc).
    """
    good = 0
    try:
        for offset, lineno, line, complete in iter_lines(
            path, chunk_size=chunk_size, expect=expect, max_line_bytes=max_line_bytes
        ):
            if structural is not None and structural(line):
                continue
            if complete and good < skip:
                good += 1
                yield offset, lineno, len(line) + 1, SKIPPED
                continue
            try:
                obj = decode(line)
            except (ValueError, RecursionError) as e:  # msgspec.DecodeError is a ValueError
                if complete:
                    raise PermanentError(
                        f"{path}: line {lineno} (byte offset {offset}): invalid JSON: {e}"
                    ) from None
                raise _Truncated(offset) from None
            if obj is SKIP:
                continue
            good += 1
            yield (
                offset,
                lineno,
                len(line) + (1 if complete else 0),
                (SKIPPED if good <= skip else obj),
            )
    except _Truncated as t:
        msg = (
            f"{path} is truncated: the data ends in the middle of a record at byte offset {t.offset}"
            f" (decompressed) after {good} good records; the dump was probably interrupted"
        )
        if not allow_truncated:
            raise PermanentError(
                msg,
                hint="re-run arangodump, or --allow-truncated (ETL_ALLOW_TRUNCATED=true) "
                "to drop the incomplete tail",
            ) from None
        if warn is not None:
            warn(msg + "; the incomplete tail was dropped")
