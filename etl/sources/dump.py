"""An arangodump directory as a Source (spec: arangodump-format.md, "reader spec").

Finds the database, the collections (`*.structure.json`, `_*` skipped) and their data files as
arangorestore does; refuses encrypted and VPack dumps. Reading, duplicates, removal markers and
positions are etl.sources.files'.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from etl import jsonutil
from etl.errors import PermanentError
from etl.sources.files import FileCollection, FileSource, check_encryption
from etl.sources.lines import BOM, CHUNK_SIZE

log = logging.getLogger("etl.sources.dump")

_TYPES: dict[object, str] = {2: "document", 3: "edge"}


class DumpSource(FileSource):
    """Source over an arangodump directory (see the module docstring)."""

    _log = log
    first_of_repeated = True  # arangodump-format.md: keep the first value, warn

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
        check_encryption(self.path)
        self.dir, self.database = self._pick_database(self.path, database)
        if self.dir != self.path:
            check_encryption(self.dir)
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
                check_encryption(sub)
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
                hint="point --source at its directory: "
                + " or ".join(f"dump:{sub}" for sub in dbs.values()),
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

    def _read_structures(self) -> dict[str, FileCollection]:
        vpack = sorted(p.name for p in self.dir.iterdir() if ".data.vpack" in p.name)
        if vpack:
            raise PermanentError(
                f"dump {self.dir} holds VPack data files ({vpack[0]}); VPack is not supported",
                hint="re-dump without --dump-vpack",
            )
        out: dict[str, FileCollection] = {}
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
            out[name] = FileCollection(name, ctype, self._data_files(sp, name), sp)
        return out

    def structure(self, name: str) -> dict:
        """The collection's `*.structure.json`, with `indexes` at the top level (legacy dumps
        keep them inside `parameters`)."""
        st = _read_json_file(self._get(name).structure)
        params: dict[str, Any] = st["parameters"] if isinstance(st.get("parameters"), dict) else {}
        indexes = st.get("indexes", params.get("indexes"))
        return {**st, "indexes": indexes if isinstance(indexes, list) else []}

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
