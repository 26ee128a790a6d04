"""PostgreSQL over TLS: libpq's sslmode and sslrootcert in the DSN reach every etl connection.

The embedded PostgreSQL is built without SSL, and the system one must not be reconfigured, so
the test puts a TLS front in between, as pgbouncer or a cloud proxy does: it answers libpq's
SSLRequest with 'S', does the TLS handshake with a self-signed certificate for 127.0.0.1, and
relays the decrypted protocol to the test server. A client that does not ask for TLS is
dropped, so a command that succeeds proves that all of its connections were encrypted.
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.datagen import generate, write_dump
from tests.helpers import assert_one_line_error, etl, pg_env
from tests.tls import self_signed

SSL_REQUEST, GSSENC_REQUEST = 80877103, 80877104


class TlsFront:
    """Accepts PostgreSQL clients over TLS on 127.0.0.1 and relays them to `backend`."""

    def __init__(self, backend_dsn: str, cert: Path, key: Path):
        params = conninfo_to_dict(backend_dsn)
        host, port = params.get("host") or "/tmp", int(params.get("port") or 5432)
        self.backend = (
            (socket.AF_UNIX, f"{host}/.s.PGSQL.{port}")
            if host.startswith("/")
            else (socket.AF_INET, (host, port))
        )
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.plain_refused = 0
        self.offer_tls = True  # False: answer 'N' to the SSLRequest, as a server without TLS does
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            while (
                True
            ):  # a client may try GSS encryption first: refuse it, wait for the next request
                length, code = struct.unpack("!II", _read(client, 8))
                if code == GSSENC_REQUEST:
                    client.sendall(b"N")
                    continue
                break
            if code != SSL_REQUEST or length != 8:
                self.plain_refused += 1  # a startup packet in clear text: not here
                client.close()
                return
            if not self.offer_tls:
                client.sendall(b"N")
                client.close()
                return
            client.sendall(b"S")
            tls = self.ctx.wrap_socket(client, server_side=True)
            backend = socket.socket(self.backend[0])
            backend.connect(self.backend[1])
        except (OSError, ssl.SSLError, struct.error):
            client.close()
            return
        threading.Thread(target=_pump, args=(backend, tls), daemon=True).start()
        _pump(tls, backend)

    def close(self) -> None:
        self.listener.close()


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise OSError("closed")
        data += chunk
    return data


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass


@pytest.fixture(scope="module")
def tls_front(pg_admin_dsn, tmp_path_factory):
    certs = tmp_path_factory.mktemp("pg-tls")
    cert, key = self_signed(certs, "server")
    other, _ = self_signed(certs, "other")
    front = TlsFront(pg_admin_dsn, cert, key)
    yield front, cert, other
    front.close()


def tls_dsn(front: TlsFront, db_dsn: str, **params: str) -> str:
    """The test database's DSN, through the TLS front."""
    p = conninfo_to_dict(db_dsn)
    return make_conninfo(
        host="127.0.0.1",
        port=front.port,
        user=p.get("user") or "postgres",
        password=p.get("password") or None,
        dbname=p["dbname"],
        **params,
    )


def test_verify_full_with_the_servers_ca_works_for_every_connection(tls_front, make_db, tmp_path):
    front, cert, _ = tls_front
    db = make_db()
    env = pg_env(tls_dsn(front, db, sslmode="verify-full", sslrootcert=str(cert)), tmp_path)
    refused = front.plain_refused
    assert etl("apply-schema", env=env).returncode == 0
    dump = tmp_path / "dump"
    write_dump(dump, generate(30, seed=3), gzip=False)
    # a migrate opens its main, lock and index-build connections; each one must get through
    res = etl("migrate", "--all", "--source", f"dump:{dump}", env=env)
    assert res.returncode in (0, 1), res.stderr  # 1: the generated data has rejects
    res = etl("reconcile", "--all", "--source", f"dump:{dump}", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert front.plain_refused == refused  # no connection tried without TLS
    with psycopg.connect(db) as c:
        assert c.execute("select count(*) from resume_documents").fetchone()[0] > 0


def test_without_tls_the_front_refuses(tls_front, make_db):
    """The control: a connection without TLS does not get through, so the test above used TLS."""
    front, _, _ = tls_front
    refused = front.plain_refused
    proc = etl("status", env={"ETL_PG_DSN": tls_dsn(front, make_db(), sslmode="disable")})
    assert_one_line_error(proc, "error:")
    assert front.plain_refused > refused


def test_a_certificate_from_another_ca_is_one_line_exit_2(tls_front, make_db):
    front, _, other = tls_front
    proc = etl(
        "status",
        env={
            "ETL_PG_DSN": tls_dsn(front, make_db(), sslmode="verify-full", sslrootcert=str(other))
        },
    )
    assert_one_line_error(proc, "error:", "TLS failed", "certificate verify failed", "sslrootcert")


def test_tls_required_by_the_dsn_but_not_offered_is_one_line_exit_2(tls_front, make_db):
    """sslmode=require against a server that answers the SSLRequest with 'N' (no TLS)."""
    front, _, _ = tls_front
    front.offer_tls = False
    try:
        proc = etl("status", env={"ETL_PG_DSN": tls_dsn(front, make_db(), sslmode="require")})
    finally:
        front.offer_tls = True
    assert_one_line_error(proc, "error:", "TLS failed", "sslmode")
