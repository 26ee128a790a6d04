"""An arangodump directory as a Source (spec: arangodump-format.md, "reader spec").

Layout. `ENCRYPTION` is read first (anything but `none` stops here, before any other file is
opened); then `dump.json`; then every `*.structure.json` (hashed `<name>_<md5>` or plain
`<name>`; `indexes` at the top or, legacy, inside `parameters`). A collection's name and type
come only from `parameters.name` / `parameters.type`; `_*` system collections are skipped. Data
files are looked up in arangorestore's order (`E_H.data.json`, `E_H.data.json.gz`,
`E.data.json.gz`, `E_H.0.data.json.gz`, `E_H.0.data.json`, `E.data.json`; `.0.` continues with
`.1.`, `.2.`, ... until one is missing); none = 0 documents. VPack dumps and a `.json` + `.json.gz`
pair are refused. `--all-databases` dumps: pick one with `database=`; several and none chosen is an
error listing them.

Lines. Plain (`{"_key": ...}`) and enveloped (`{"type": 2300|2301|2302, "data": ...}`) lines are
told apart per line, as the server does. Files are streamed through `etl.sources.lines` (gzip by
magic bytes, chunks split only on b"\\n", BOM, CRLF, truncated tails).

Records, duplicates and removals (the streaming design). A *record* is one data line, document or
removal marker. The rule is arangorestore's: apply records in file order, the last marker of a
`_key` wins, a 2302 removal deletes. So that every `_key` is yielded at most once (and a batch never
holds one key twice), each collection is scanned once before it is read (lazily, cached; this
scan is also what `count` and `remaining()` report):

  pass 1  decodes only `_key`/`type`/`data._key` of every record, counts records, and puts each
          key into a fixed-size Bloom filter; a key the filter may have seen before, and the key
          of every removal, becomes a *candidate*. A clean dump (the 3.8+ norm) has none or a
          handful of false positives.
  pass 2  (only when there are candidates) re-reads the keys and, for candidates only, records
          the index of each of their markers. Keys with one marker and no removal are dropped.

What is kept is `last[key]` (index of the last marker) for the few keys with several markers or
a removal, plus the sorted indexes of the records that will not be yielded. Memory stays flat:
the Bloom filter has a fixed size and the tables grow only with the number of duplicates. While
reading, a document whose key has a later marker is skipped with a warning ("superseded"), and a
removal yields nothing.

Positions. A position is the number of records consumed from the collection in file order
(split files count on from one file to the next), as a decimal string. `batches(after=p)` skips
the first p records without decoding them (whole split files are skipped unread). Removal and
superseded records count as consumed, so a batch's position can advance by more than its
documents; a final batch can be empty when it only carries warnings. `remaining(after=p)` is the
number of documents that reading from p will yield.

Other decisions: integers keep their exact digits and decimals are floats (etl.jsonutil); a
repeated attribute name inside one object keeps the last value, as ArangoDB does (source-data.md);
`\\u0000` and lone surrogates are decoded as they are and left to the transform's policy.
Warnings (duplicates, a dropped truncated tail) go to the `etl.sources.dump` logger and into
`Batch.warnings`.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from etl import jsonutil
from etl.errors import PermanentError
from etl.sources.base import Batch, CollectionInfo
from etl.sources.lines import BOM, CHUNK_SIZE, SKIPPED, iter_records

log = logging.getLogger("etl.sources.dump")

DOC, REMOVE = 1, 2
_TYPES = {2: "document", 3: "edge"}
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
class _Collection:
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
    expect = b"{"  # what a data file's first content byte may be
    path: Path
    description: str
    allow_truncated: bool = False
    max_line_bytes: int | None = None
    chunk_size: int = CHUNK_SIZE
    _collections: dict[str, _Collection]

    def _line_decoder(self, path: Path, decode):
        return decode

    def _structural(self, path: Path):
        return None

    # ------------------------------------------------------------------ Source

    def collections(self) -> list[CollectionInfo]:
        return [self.collection(n) for n in sorted(self._collections)]

    def collection(self, name: str) -> CollectionInfo:
        c = self._get(name)
        scan = self._scan(c)
        ctype = c.type or ("edge" if scan.all_edge_like and scan.live > 0 else "document")
        return CollectionInfo(c.name, ctype, scan.live)  # type: ignore[arg-type]

    def remaining(self, collection: str, after: str | None = None) -> int:
        scan = self._scan(self._get(collection))
        start = self._start(scan, after)
        dead_after = len(scan.dead) - bisect.bisect_left(scan.dead, start)
        return (scan.records - start) - dead_after

    def batches(
        self, collection: str, batch_size: int, after: str | None = None
    ) -> Iterator[Batch]:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        c = self._get(collection)
        scan = self._scan(c)
        start = self._start(scan, after)
        last = scan.last
        pending_warnings: list[str] = list(scan.warnings)
        docs: list[dict] = []
        keys_in_batch: set[str] = set()
        nbytes = 0
        index = 0  # index of the next record
        for path, n_in_file in zip(c.files, scan.per_file):
            if index + n_in_file <= start:
                index += n_in_file
                continue
            skip = start - index if start > index else 0
            for _off, lineno, n, obj in self._records(path, skip, _ignore):
                if obj is SKIPPED:  # before `after`
                    index += 1
                    continue
                kind, key, doc = classify(obj, f"{path}: line {lineno}", self.envelopes)
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
                if len(docs) >= batch_size:
                    yield Batch(c.name, docs, str(index), nbytes, tuple(pending_warnings))
                    docs, keys_in_batch, nbytes, pending_warnings = [], set(), 0, []
        if index != scan.records and index > start:
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

    def _get(self, name: str) -> _Collection:
        try:
            return self._collections[name]
        except KeyError:
            raise PermanentError(
                f"collection {name!r} is not in {self.description}; it holds: "
                f"{', '.join(sorted(self._collections)) or '(none)'}"
            ) from None

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

    def _heads(self, c: _Collection, warn) -> Iterator[tuple[int, str, bool]]:
        for path in c.files:
            yield from self._heads_of(path, warn)

    def _scan(self, c: _Collection) -> _Scan:
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
        for _off, lineno, _n, obj in self._records(path, 0, warn, decode=head):
            if isinstance(obj, tuple):
                yield obj
            else:
                kind, key, doc = classify(obj, f"{path}: line {lineno}", self.envelopes)
                yield kind, key, doc is not None and _edge_like(doc)


class DumpSource(FileSource):
    """Source over an arangodump directory (see the module docstring)."""

    def __init__(
        self,
        path,
        *,
        database: str | None = None,
        allow_truncated: bool = False,
        include_system: bool = False,
        max_line_bytes: int | None = None,
        chunk_size: int = CHUNK_SIZE,
    ):
        self.path = Path(path)
        self.allow_truncated = allow_truncated
        self.include_system = include_system
        self.max_line_bytes = max_line_bytes
        self.chunk_size = chunk_size
        if not self.path.is_dir():
            raise PermanentError(f"dump {self.path} is not a directory")
        _check_encryption(self.path)
        self.dir, self.database = self._pick_database(self.path, database)
        if self.dir != self.path:
            _check_encryption(self.dir)
        self.meta = self._read_dump_json()
        self.description = f"arangodump {self.path}" + (
            f" (database {self.database})" if self.database else ""
        )
        self._collections = self._read_structures()

    # ------------------------------------------------------------------ layout

    @staticmethod
    def _pick_database(root: Path, wanted: str | None) -> tuple[Path, str | None]:
        if (root / "dump.json").exists() or any(root.glob("*.structure.json")):
            meta = _read_json_file(root / "dump.json") if (root / "dump.json").exists() else {}
            name = _db_name(meta)
            if wanted is not None and name is not None and wanted != name:
                raise PermanentError(f"dump {root} holds database {name!r}, not {wanted!r}")
            return root, name
        dbs: dict[str, Path] = {}
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            if (sub / "dump.json").exists() or any(sub.glob("*.structure.json")):
                _check_encryption(sub)
                meta = _read_json_file(sub / "dump.json") if (sub / "dump.json").exists() else {}
                dbs[_db_name(meta) or sub.name] = sub
        if not dbs:
            raise PermanentError(
                f"{root} is not an arangodump directory (no dump.json, no *.structure.json)"
            )
        if wanted is None:
            if len(dbs) == 1:
                name, sub = next(iter(dbs.items()))
                return sub, name
            raise PermanentError(
                f"dump {root} holds several databases ({', '.join(sorted(dbs))}); choose one",
                hint="--database NAME",
            )
        for name, sub in dbs.items():
            if wanted in (name, sub.name):
                return sub, name
        raise PermanentError(
            f"dump {root} has no database {wanted!r}; it holds {', '.join(sorted(dbs))}"
        )

    def _read_dump_json(self) -> dict:
        p = self.dir / "dump.json"
        meta = _read_json_file(p) if p.exists() else {}
        if meta.get("useVPack") is True:
            raise PermanentError(
                f"dump {self.dir} was written with --dump-vpack (useVPack: true); VPack data is "
                "not supported",
                hint="re-dump without --dump-vpack",
            )
        return meta

    def _read_structures(self) -> dict[str, _Collection]:
        vpack = sorted(p.name for p in self.dir.iterdir() if ".data.vpack" in p.name)
        if vpack:
            raise PermanentError(
                f"dump {self.dir} holds VPack data files ({vpack[0]}); VPack is not supported",
                hint="re-dump without --dump-vpack",
            )
        out: dict[str, _Collection] = {}
        for sp in sorted(self.dir.glob("*.structure.json")):
            st = _read_json_file(sp)
            params = st.get("parameters")
            if not isinstance(params, dict) or not isinstance(params.get("name"), str):
                raise PermanentError(f"{sp}: no parameters.name")
            name = params["name"]
            if (name.startswith("_") or params.get("isSystem") is True) and not self.include_system:
                continue
            ctype = _TYPES.get(params.get("type"))
            if ctype is None:
                raise PermanentError(
                    f"{sp}: parameters.type is {params.get('type')!r}, expected 2 (document) or 3 (edge)"
                )
            if name in out:
                raise PermanentError(
                    f"dump {self.dir}: collection {name!r} is described twice "
                    f"({out[name].structure.name}, {sp.name})"
                )
            out[name] = _Collection(name, ctype, self._data_files(sp, name), sp)
        return out

    def _data_files(self, structure: Path, name: str) -> list[Path]:
        h = hashlib.md5(name.encode("utf-8")).hexdigest()
        stem = structure.name[: -len(".structure.json")]
        file_e = stem[: -len(h) - 1] if stem.endswith("_" + h) else stem
        names = [name] + ([file_e] if file_e != name else [])
        for e in names:
            for cand in (
                f"{e}_{h}.data.json",
                f"{e}_{h}.data.json.gz",
                f"{e}.data.json.gz",
                f"{e}_{h}.0.data.json.gz",
                f"{e}_{h}.0.data.json",
                f"{e}.data.json",
            ):
                p = self.dir / cand
                if not p.is_file():
                    continue
                self._refuse_pair(p)
                if ".0.data.json" not in cand:
                    return [p]
                files, n = [p], 1
                suffix = cand[cand.index(".0.data.json") + 3 :]  # "data.json" or "data.json.gz"
                base = cand[: cand.index(".0.data.json")]
                while (nxt := self.dir / f"{base}.{n}.{suffix}").is_file():
                    self._refuse_pair(nxt)
                    files.append(nxt)
                    n += 1
                return files
        return []

    @staticmethod
    def _refuse_pair(p: Path) -> None:
        other = p.with_name(p.name[:-3]) if p.name.endswith(".gz") else p.with_name(p.name + ".gz")
        if other.is_file():
            raise PermanentError(
                f"dump {p.parent} holds both {min(p.name, other.name)} and {max(p.name, other.name)}"
                " (arangodump --overwrite with different compression?); which one is current is"
                " ambiguous",
                hint="delete the stale one",
            )


# ---------------------------------------------------------------------- helpers


def _ignore(_msg: str) -> None:
    pass  # the scan already reported it


def _check_encryption(d: Path) -> None:
    p = d / "ENCRYPTION"
    if not p.exists():
        return  # pre-3.3 or hand-made: assume none
    value = p.read_bytes().strip().decode("utf-8", "replace")
    if value != "none":
        raise PermanentError(
            f"Dump {d} is encrypted ({value}); this tool cannot decrypt it. Restore it with arangorestore "
            "--encryption.keyfile into a scratch ArangoDB and re-dump without a key."
        )


def _read_json_file(p: Path) -> dict:
    """A small metadata file (dump.json, *.structure.json): one JSON object."""
    raw = p.read_bytes()
    if raw.startswith(BOM):
        raw = raw[3:]
    if not raw.lstrip().startswith(b"{"):
        raise PermanentError(f"{p} is unreadable, possibly encrypted (it does not start with '{{')")
    try:
        obj = jsonutil.loads(raw)
    except ValueError as e:
        raise PermanentError(f"{p}: invalid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise PermanentError(f"{p}: expected a JSON object")
    return obj


def _db_name(meta: dict) -> str | None:
    props = meta.get("properties")
    if isinstance(props, dict) and isinstance(props.get("name"), str):
        return props["name"]
    db = meta.get("database")
    return db if isinstance(db, str) else None
