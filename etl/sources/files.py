"""The reader the dump and jsonl sources share: a collection is one or more newline-delimited
JSON files; a lazy scan finds duplicate keys and removal markers (the last marker wins), and a
position is the number of records consumed, so `after`/`until` are record counts.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import msgspec

from etl import jsonutil
from etl.errors import PermanentError
from etl.sources.base import Batch, CollectionInfo
from etl.sources.lines import CHUNK_SIZE, SKIPPED, iter_records

log = logging.getLogger("etl.sources.files")

DOC, REMOVE = 1, 2
_MAX_LISTED_WARNINGS = 20


class _DataHead(msgspec.Struct):
    key: Any = msgspec.field(name="_key", default=None)
    efrom: Any = msgspec.field(name="_from", default=None)
    eto: Any = msgspec.field(name="_to", default=None)


class _Head(msgspec.Struct):
    key: Any = msgspec.field(name="_key", default=None)
    type: Any = None
    data: msgspec.Raw = msgspec.Raw(b"null")
    mkey: Any = msgspec.field(name="key", default=None)
    efrom: Any = msgspec.field(name="_from", default=None)
    eto: Any = msgspec.field(name="_to", default=None)


_head_decoder = msgspec.json.Decoder(_Head)
_data_head_decoder = msgspec.json.Decoder(_DataHead)


def classify(obj: Any, where: str, envelopes: bool = True) -> tuple[int, str, dict | None]:
    """(DOC, key, document) or (REMOVE, key, None) for one decoded line; PermanentError otherwise."""
    if not isinstance(obj, dict):
        raise PermanentError(f"{where}: expected a JSON object, found {type(obj).__name__}")
    key = obj.get("_key")
    if isinstance(key, str):
        return DOC, key, obj
    if not envelopes:
        raise PermanentError(f"{where}: a row without a string _key")
    t = obj.get("type")
    if type(t) is int:
        data = obj.get("data")
        if t in (2300, 2301):
            if not isinstance(data, dict) or not isinstance(data.get("_key"), str):
                raise PermanentError(
                    f"{where}: envelope of type {t} without a document with a string _key in 'data'"
                )
            return DOC, data["_key"], data
        if t == 2302:
            k = data.get("_key") if isinstance(data, dict) else None
            if not isinstance(k, str):
                k = obj.get("key")
            if not isinstance(k, str):
                raise PermanentError(f"{where}: removal marker (type 2302) without a key")
            return REMOVE, k, None
        raise PermanentError(f"{where}: unknown marker type {t} (expected 2300, 2301 or 2302)")
    raise PermanentError(
        f"{where}: neither a document (no string _key) nor an envelope (no numeric type)"
    )


def _edge_like(d: Any) -> bool:
    return isinstance(d.get("_from"), str) and isinstance(d.get("_to"), str)


def _head(line: bytes, envelopes: bool = True) -> Any:
    """Just enough of a line to classify it: (kind, key, has _from and _to); the full decoder
    only for what msgspec refuses (lone surrogates, bad JSON, non-objects)."""
    try:
        h = _head_decoder.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return jsonutil.loads(line)  # lone surrogates, or a precise error for bad JSON
    if isinstance(h.key, str):
        return (DOC, h.key, isinstance(h.efrom, str) and isinstance(h.eto, str))
    if envelopes and type(h.type) is int:
        try:
            d = _data_head_decoder.decode(h.data)
            dkey, edge = d.key, isinstance(d.efrom, str) and isinstance(d.eto, str)
        except (msgspec.DecodeError, msgspec.ValidationError):
            dkey, edge = None, False
        if h.type in (2300, 2301) and isinstance(dkey, str):
            return (DOC, dkey, edge)
        if h.type == 2302 and isinstance(dkey, str):
            return (REMOVE, dkey, False)
        if h.type == 2302 and isinstance(h.mkey, str):
            return (REMOVE, h.mkey, False)
    return jsonutil.loads(line)  # let classify() explain what is wrong


def _plain_head(line: bytes) -> Any:
    return _head(line, envelopes=False)


class _Bloom:
    """Fixed-size Bloom filter over str keys (5 probes, double hashing on hash())."""

    def __init__(self, bits_log2: int):
        self.mask = (1 << bits_log2) - 1
        self.bits = bytearray(1 << (bits_log2 - 3))

    def add(self, key: str) -> bool:
        """Add key; True when it may have been added before."""
        h = hash(key)
        h1, h2 = h & 0xFFFFFFFF, ((h >> 32) & 0xFFFFFFFF) | 1
        bits, mask, seen = self.bits, self.mask, True
        for i in range(5):
            p = (h1 + i * h2) & mask
            b = 1 << (p & 7)
            if not bits[p >> 3] & b:
                seen = False
                bits[p >> 3] |= b
        return seen


@dataclass
class _Scan:
    records: int = 0
    per_file: list[int] = field(default_factory=list)
    last: dict[str, int] = field(default_factory=dict)  # keys with several markers or a removal
    dead: list[int] = field(default_factory=list)  # sorted indexes of records not yielded
    removed: set[str] = field(default_factory=set)  # keys whose last marker is a removal
    duplicates: int = 0
    removals: int = 0
    warnings: list[str] = field(default_factory=list)
    all_edge_like: bool = True  # every document has string _from and _to (jsonl type inference)

    @property
    def live(self) -> int:
        return self.records - len(self.dead)


@dataclass
class FileCollection:
    """One collection of a file source: its data files, in order, and its scan once made."""

    name: str
    type: str | None  # None: inferred from the rows (jsonl)
    files: list[Path]
    structure: Path
    scan: _Scan | None = None


class FileSource:
    """What the dump and jsonl sources share: scan, positions, batches (see the module doc).

    A subclass sets `path`, `description`, `_collections`, `allow_truncated`, `max_line_bytes`,
    `chunk_size`, and may override `envelopes`, `expect` and `_line_decoder()`.
    """

    _log = log
    envelopes = True  # 2300/2301/2302 envelopes allowed
    # an object that repeats an attribute name: keep the first value (a dump, as arangorestore
    # --cleanup-duplicate-attributes does) or the last (an export, as ArangoDB's parser)
    first_of_repeated = False
    expect = b"{"  # what a data file's first content byte may be
    path: Path
    description: str
    allow_truncated: bool = False
    max_line_bytes: int | None = None
    chunk_size: int = CHUNK_SIZE
    _collections: dict[str, FileCollection]

    def _line_decoder(self, path: Path, decode):
        return decode

    def _structural(self, path: Path):
        return None

    # ------------------------------------------------------------------ Source

    def collections(self) -> list[CollectionInfo]:
        return [self.collection(n) for n in sorted(self._collections)]

    def collection_names(self) -> list[str]:
        """The names only, without reading any data file (collections() counts them)."""
        return sorted(self._collections)

    def collection(self, name: str) -> CollectionInfo:
        c = self._get(name)
        scan = self._scan(c)
        ctype = c.type or ("edge" if scan.all_edge_like and scan.live > 0 else "document")
        return CollectionInfo(c.name, ctype, scan.live)  # type: ignore[arg-type]

    def split_points(self, collection: str, parts: int) -> list[str]:
        """[]: one range, since a file cannot be read from a key (only counted up to a position)."""
        self._get(collection)
        return []

    def remaining(self, collection: str, after: str | None = None, until: str | None = None) -> int:
        scan = self._scan(self._get(collection))
        start = self._start(scan, after)
        end = self._end(scan, start, until)
        dead = bisect.bisect_left(scan.dead, end) - bisect.bisect_left(scan.dead, start)
        return (end - start) - dead

    def batches(
        self,
        collection: str,
        batch_size: int,
        after: str | None = None,
        until: str | None = None,
        max_bytes: int | None = None,
    ) -> Iterator[Batch]:
        """Documents after position `after` up to position `until` (record counts), in file order."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        c = self._get(collection)
        scan = self._scan(c)
        start = self._start(scan, after)
        end = self._end(scan, start, until)
        last = scan.last
        pending_warnings: list[str] = list(scan.warnings)
        docs: list[dict] = []
        keys_in_batch: set[str] = set()
        nbytes = 0
        index = 0  # index of the next record
        for path, n_in_file in zip(c.files, scan.per_file):
            if until is not None and index >= end:
                break
            if index + n_in_file <= start:
                index += n_in_file
                continue
            skip = start - index if start > index else 0
            repeated: list[str] = []
            in_file = self._records(path, skip, _ignore, self._document_decoder(repeated))
            # with `until`, no line after it is decoded (nor can fail)
            records = in_file if until is None else islice(in_file, end - index)
            for _off, lineno, n, obj in records:
                if obj is SKIPPED:  # before `after`
                    index += 1
                    continue
                kind, key, doc = classify(obj, f"{path}: line {lineno}", self.envelopes)
                if repeated:
                    msg = (
                        f"{c.name}: _key {key!r} ({path.name} line {lineno}) repeats the attribute"
                        f" name(s) {', '.join(sorted(set(repeated)))}: the first value is kept"
                        " (as arangorestore --cleanup-duplicate-attributes does)"
                    )
                    self._log.warning(msg)
                    pending_warnings.append(msg)
                    repeated.clear()
                i = index
                index += 1
                nbytes += n
                if key in last:
                    if kind == REMOVE:
                        continue
                    if last[key] != i:
                        if (
                            key in scan.removed
                        ):  # deleted by a later 2302 marker: what the server does
                            self._log.debug(
                                "%s: _key %r at record %d removed by record %d",
                                c.name,
                                key,
                                i,
                                last[key],
                            )
                        else:
                            msg = (
                                f"{c.name}: duplicate _key {key!r}: record {i} ({path.name} line {lineno}) "
                                f"superseded by record {last[key]} (last wins)"
                            )
                            self._log.warning(msg)
                            pending_warnings.append(msg)
                        continue
                if key in keys_in_batch:  # cannot happen after the scan; a guard, not a policy
                    raise PermanentError(
                        f"{c.name}: _key {key!r} read twice; the dump changed since it was scanned"
                    )
                keys_in_batch.add(key)
                docs.append(doc)  # type: ignore[arg-type]
                if len(docs) >= batch_size or (max_bytes and nbytes >= max_bytes):
                    yield Batch(c.name, docs, str(index), nbytes, tuple(pending_warnings))
                    docs, keys_in_batch, nbytes, pending_warnings = [], set(), 0, []
            in_file.close()  # the file, when `until` stopped the reading inside it
        if index != end and index > start:
            raise PermanentError(
                f"{c.name}: read {index} records, the scan counted {scan.records}; "
                "the dump changed while it was read"
            )
        if docs or pending_warnings:
            yield Batch(c.name, docs, str(max(index, start)), nbytes, tuple(pending_warnings))

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ internals

    def _get(self, name: str) -> FileCollection:
        try:
            return self._collections[name]
        except KeyError:
            raise PermanentError(
                f"collection {name!r} is not in {self.description}; it holds: "
                f"{', '.join(sorted(self._collections)) or '(none)'}"
            ) from None

    @classmethod
    def _end(cls, scan: _Scan, start: int, until: str | None) -> int:
        if until is None:
            return scan.records
        end = cls._start(scan, until)
        if end < start:
            raise PermanentError(f"position {until} (until) is before position {start} (after)")
        return end

    @staticmethod
    def _start(scan: _Scan, after: str | None) -> int:
        if after is None or after == "":
            return 0
        try:
            start = int(after)
        except ValueError:
            raise PermanentError(
                f"position {after!r} is not a record count (a dump position is a number)"
            ) from None
        if not 0 <= start <= scan.records:
            raise PermanentError(
                f"position {after} is outside the collection ({scan.records} records)"
            )
        return start

    def _document_decoder(self, repeated: list[str]):
        """The decoder of whole documents; with `first_of_repeated` it adds the names a line
        repeats to `repeated`."""
        if not self.first_of_repeated:
            return jsonutil.loads

        def decode(line: bytes):
            obj, names = jsonutil.loads_first_wins(line)
            repeated.extend(names)
            return obj

        return decode

    def _records(self, path: Path, skip: int, warn, decode=jsonutil.loads):
        return iter_records(
            path,
            self._line_decoder(path, decode),
            allow_truncated=self.allow_truncated,
            warn=warn,
            skip=skip,
            chunk_size=self.chunk_size,
            expect=self.expect,
            max_line_bytes=self.max_line_bytes,
            structural=self._structural(path),
        )

    def _heads(self, c: FileCollection, warn) -> Iterator[tuple[int, str, bool]]:
        for path in c.files:
            yield from self._heads_of(path, warn)

    def _scan(self, c: FileCollection) -> _Scan:
        if c.scan is not None:
            return c.scan
        scan = _Scan()
        warnings: list[str] = []
        total = sum(p.stat().st_size for p in c.files)
        bloom = _Bloom(
            max(16, min(27, (total * 8).bit_length()))
        )  # ~8 bits per byte of input, <= 16 MiB
        candidates: set[str] = set()
        for path in c.files:
            n = 0
            for kind, key, edge in self._heads_of(path, warnings.append):
                scan.all_edge_like = scan.all_edge_like and edge
                if bloom.add(key) or kind == REMOVE:
                    candidates.add(key)
                n += 1
            scan.per_file.append(n)
            scan.records += n
        del bloom
        if candidates:
            markers: dict[str, list[tuple[int, int]]] = {}
            i = 0
            for kind, key, _edge in self._heads(c, _ignore):
                if key in candidates:
                    markers.setdefault(key, []).append((i, kind))
                i += 1
            dead: list[int] = []
            dup_keys: list[str] = []
            for key, ms in markers.items():
                removed = any(k == REMOVE for _i, k in ms)
                if len(ms) == 1 and not removed:
                    continue
                scan.last[key] = ms[-1][0]
                n_docs = sum(1 for _i, k in ms if k == DOC)
                if n_docs > 1:
                    dup_keys.append(key)
                    scan.duplicates += n_docs - 1
                scan.removals += sum(1 for _i, k in ms if k == REMOVE)
                dead.extend(i for i, k in ms[:-1])
                if ms[-1][1] == REMOVE:
                    dead.append(ms[-1][0])
                    scan.removed.add(key)
            scan.dead = sorted(dead)
            if dup_keys:
                shown = ", ".join(repr(k) for k in dup_keys[:_MAX_LISTED_WARNINGS])
                more = (
                    f" and {len(dup_keys) - _MAX_LISTED_WARNINGS} more"
                    if len(dup_keys) > _MAX_LISTED_WARNINGS
                    else ""
                )
                warnings.append(
                    f"{c.name}: {len(dup_keys)} _keys appear more than once ({shown}{more}); "
                    "the last marker of each wins (a 3.8+ dump should have none)"
                )
            if scan.removals:
                self._log.info("%s: %d removal markers (2302) applied", c.name, scan.removals)
        for w in warnings:
            self._log.warning(w)
        scan.warnings = warnings
        c.scan = scan
        return scan

    def _heads_of(self, path: Path, warn) -> Iterator[tuple[int, str, bool]]:
        head = _head if self.envelopes else _plain_head
        if self.first_of_repeated:
            head = _first_wins_head(head)
        for _off, lineno, _n, obj in self._records(path, 0, warn, decode=head):
            if isinstance(obj, tuple):
                yield obj
            else:
                kind, key, doc = classify(obj, f"{path}: line {lineno}", self.envelopes)
                yield kind, key, doc is not None and _edge_like(doc)


def _first_wins_head(head):
    """`head`, except that a line naming "_key", "_from" or "_to" more than once (it may repeat
    one) is decoded whole with the first value kept, as the documents themselves are."""

    def decode(line: bytes) -> Any:
        if line.count(b'"_key"') > 1 or line.count(b'"_from"') > 1 or line.count(b'"_to"') > 1:
            return jsonutil.loads_first_wins(line)[0]
        return head(line)

    return decode


def _ignore(_msg: str) -> None:
    pass  # the scan already reported it


def check_encryption(d: Path) -> None:
    """PermanentError when directory d holds an ENCRYPTION file that is not `none`."""
    p = d / "ENCRYPTION"
    if not p.exists():
        return  # pre-3.3 or hand-made: assume none
    value = p.read_bytes().strip().decode("utf-8", "replace")
    if value != "none":
        raise PermanentError(
            f"Dump {d} is encrypted ({value}); this tool cannot decrypt it. Restore it with arangorestore "
            "--encryption.keyfile into a scratch ArangoDB and re-dump without a key."
        )
