"""A small non-ATSPro database ("shop") for the generic tables, written as an arangodump in
every layout arangodump-format.md lists, or seeded into the fake ArangoDB server. `live()`
gives what each collection holds after removals and repeated markers (the last one wins)."""

from __future__ import annotations

import gzip as _gzip
import hashlib
import json
from pathlib import Path

DATABASE = "shop"
LAYOUTS = ("2.8", "3.8", "3.10", "3.10-split", "3.12", "3.12-plain")

INDEXES = {
    "users": [
        {"type": "persistent", "fields": ["email"], "unique": True, "sparse": False},
        {"type": "fulltext", "fields": ["bio"], "minLength": 3},
        {"type": "geo", "fields": ["location"], "geoJson": True},
        {"type": "ttl", "fields": ["expires"], "expireAfter": 3600},
        {"type": "persistent", "fields": ["address.city"], "unique": False},
        {"type": "persistent", "fields": ["tags[*]"], "unique": False},
        {"type": "skiplist", "fields": ["age", "name"], "unique": False},
    ],
    "products": [{"type": "hash", "fields": ["sku"], "unique": True, "sparse": True}],
    "knows": [{"type": "persistent", "fields": ["_from", "since"], "unique": False}],
}
GRAPH = {
    "_key": "social",
    "_id": "_graphs/social",
    "_rev": "_g1",
    "edgeDefinitions": [{"collection": "knows", "from": ["users"], "to": ["users"]}],
    "orphanCollections": [],
}
TYPES = {"users": 2, "products": 2, "Order-Items": 2, "empty": 2, "knows": 3, "_graphs": 2}


def _user(i: int) -> dict:
    d = {
        "_key": f"u{i}",
        "_id": f"users/u{i}",
        "_rev": f"_u{i:04x}",
        "name": f"User {i}",
        "email": f"user{i}@example.org",
        "age": 20 + i % 50,
        "score": (i * 1.5) if i % 3 else i,  # integers and floats: numeric
        "active": i % 2 == 0,
        "joined": f"2024-0{1 + i % 9}-1{i % 10}T10:00:0{i % 10}Z",
        "bio": f"likes graphs and tables number {i}",
        "tags": ["a", f"t{i % 4}"],
        "address": {"city": f"City {i % 7}", "zip": f"{10000 + i}"},
        "location": [13.4 + i / 100, 52.5],
        "expires": 1790000000 + i,
    }
    if i % 10 == 0:
        d["nick"] = f"n{i}"  # rare: no typed column
    if i % 20 == 5:
        del d["age"]  # most have it
    if i == 7:
        d["big"] = 2**70  # beyond bigint, kept exactly in data
    if i == 8:
        d["_weird key"] = "x"
        d["emoji"] = "\U0001f600 \u2028 ok"
    return d


def documents() -> dict[str, list[dict]]:
    """Every collection's documents in file order (live ones, before removals and repeats)."""
    users = [_user(i) for i in range(60)]
    users.append({"_key": "nul", "_id": "users/nul", "_rev": "_n", "name": "a\u0000b"})
    products = [
        {"_key": f"p{i}", "_id": f"products/p{i}", "_rev": f"_p{i}", "sku": f"SKU-{i:03d}",
         "price": 9.5 + i, "name": f"Product {i}", "stock": i}
        for i in range(25)
    ]  # fmt: skip
    items = [
        {"_key": f"i{i}", "_id": f"Order-Items/i{i}", "_rev": f"_i{i}", "qty": i, "product": f"p{i}"}
        for i in range(5)
    ]  # fmt: skip
    knows = [
        {"_key": f"k{i}", "_id": f"knows/k{i}", "_rev": f"_k{i}", "_from": f"users/u{i}",
         "_to": f"users/u{(i * 7) % 60}", "since": 2000 + i}
        for i in range(40)
    ]  # fmt: skip
    knows.append(
        {"_key": "dangling", "_id": "knows/dangling", "_rev": "_kd", "_from": "users/u1",
         "_to": "users/nobody", "since": 1999}
    )  # fmt: skip
    knows.append(  # an end in a collection the database does not have
        {"_key": "ghost", "_id": "knows/ghost", "_rev": "_kg", "_from": "ghosts/g1",
         "_to": "users/u2", "since": 1998}
    )  # fmt: skip
    return {
        "users": users, "products": products, "Order-Items": items, "empty": [], "knows": knows,
        "_graphs": [GRAPH],
    }  # fmt: skip


# the 2.x layout repeats and removes documents: (collection, marker type, document)
def _legacy_markers(docs: dict[str, list[dict]]) -> dict[str, list[tuple[int, dict]]]:
    out = {}
    for name, ds in docs.items():
        t = 2301 if TYPES[name] == 3 else 2300
        out[name] = [(t, d) for d in ds]
    out["users"] += [
        (2302, {"_key": "u3"}),  # removed
        (2300, {**_user(4), "name": "User 4 renamed", "_rev": "_u4b"}),  # repeated: last wins
        (2302, {"_key": "u5"}),
        (2300, {**_user(5), "name": "User 5 back"}),  # removed, then written again
    ]
    out["knows"] += [(2302, {"_key": "k0"})]
    return out


def live(layout: str) -> dict[str, dict[str, dict]]:
    """collection -> key -> document, as a restore of that layout would hold them."""
    docs = documents()
    markers = (
        _legacy_markers(docs)
        if layout == "2.8"
        else {n: [(2300, d) for d in ds] for n, ds in docs.items()}
    )
    out: dict[str, dict[str, dict]] = {}
    for name, ms in markers.items():
        state: dict[str, dict] = {}
        for t, d in ms:
            if t == 2302:
                state.pop(d["_key"], None)
            else:
                state.pop(d["_key"], None)
                state[d["_key"]] = d
        out[name] = state
    return out


def _encode(doc) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def write(out_dir, layout: str) -> Path:
    """The shop database as the arangodump of `layout` would write it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    legacy = layout == "2.8"
    envelope = layout in ("2.8", "3.8")
    gz = layout not in ("2.8", "3.12-plain")
    split = layout == "3.10-split"
    if not legacy:
        (out / "ENCRYPTION").write_bytes(b"none")
    meta = {"database": DATABASE, "lastTickAtDumpStart": "1790012345",
            "properties": {"id": "1017", "name": DATABASE, "isSystem": False, "path": "none"}}  # fmt: skip
    if layout in ("3.8", "3.10", "3.10-split"):
        meta["useEnvelope"] = envelope
    (out / "dump.json").write_bytes(_encode(meta))
    (out / "shopview.view.json").write_bytes(
        _encode({"name": "shopview", "type": "arangosearch", "links": {"users": {}}})
    )
    docs = documents()
    markers = (
        _legacy_markers(docs) if legacy else {n: [(2300, d) for d in ds] for n, ds in docs.items()}
    )
    for cid, (name, ms) in enumerate(markers.items(), start=2000):
        h = hashlib.md5(name.encode()).hexdigest()
        stem = name if legacy else f"{name}_{h}"
        params = {"name": name, "type": TYPES[name], "id": str(cid), "cid": str(cid),
                  "isSystem": name.startswith("_")}  # fmt: skip
        indexes = [{"id": "0", "type": "primary", "fields": ["_key"], "unique": True}]
        indexes += [{"id": str(i + 1), **ix} for i, ix in enumerate(INDEXES.get(name, []))]
        structure = (
            {"parameters": {**params, "indexes": indexes}}
            if legacy
            else {"indexes": indexes, "parameters": params}
        )
        (out / f"{stem}.structure.json").write_bytes(_encode(structure))
        lines = []
        for t, d in ms:
            if not envelope:
                lines.append(_encode(d))
            elif legacy and t == 2302 and d["_key"] in ("u5",):
                lines.append(_encode({"type": 2302, "key": d["_key"], "data": {}, "tick": "9"}))
            elif legacy:
                lines.append(_encode({"type": t, "data": d, "tick": "8", "key": d["_key"]}))
            else:
                lines.append(_encode({"type": 2300, "data": d}))
        chunks = [lines[i : i + 20] for i in range(0, len(lines), 20)] if split else [lines]
        for n, chunk in enumerate(chunks or [[]]):
            fname = f"{stem}.{n}.data.json" if split else f"{stem}.data.json"
            data = b"".join(line + b"\n" for line in chunk)
            if gz:
                (out / (fname + ".gz")).write_bytes(_gzip.compress(data))
            else:
                (out / fname).write_bytes(data)
    return out


def seed_server(server) -> None:
    """The shop database (3.x content) in the fake ArangoDB server, with its indexes and graph."""
    from tests.fakearango.fixtures import seed

    server.create_database(DATABASE)
    for name, ds in documents().items():
        if name == "_graphs":
            server.databases[DATABASE].collections["_graphs"].docs["social"] = dict(GRAPH)
            continue
        server.create_collection(DATABASE, name, edge=TYPES[name] == 3, indexes=INDEXES.get(name))
        if ds:
            seed(server, DATABASE, name, ds, edge=TYPES[name] == 3)
