"""A real PgBouncer (Debian package `pgbouncer`) in front of the test server, started by the
test that needs it on a free port, in session or transaction pooling."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )
    if found is None:
        if os.environ.get("ETL_REQUIRE_PGBOUNCER"):
            pytest.fail("pgbouncer is required here (ETL_REQUIRE_PGBOUNCER) but not installed")
        pytest.skip("no pgbouncer binary (apt-get install pgbouncer)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def pgbouncer(admin_dsn: str, pool_mode: str, **settings):
    """Yields dsn(dbname, user=None): a DSN that reaches `dbname` of the server behind
    `admin_dsn` through PgBouncer. Every login is trusted by PgBouncer and passed on as is;
    the admin DSN's user may use PgBouncer's admin console (SHOW CONFIG)."""
    binary = pgbouncer_binary()
    server = conninfo_to_dict(admin_dsn)
    port = _free_port()
    work = Path(tempfile.mkdtemp(prefix="etl-pgbouncer-"))
    admin = server.get("user") or "postgres"
    (work / "userlist.txt").write_text(f'"{admin}" ""\n')
    options = {
        "listen_addr": "127.0.0.1",
        "listen_port": port,
        "unix_socket_dir": "",
        "auth_type": "trust",
        "auth_file": work / "userlist.txt",
        "pool_mode": pool_mode,
        "admin_users": admin,
        "max_client_conn": 200,
        "default_pool_size": 20,
        "ignore_startup_parameters": "extra_float_digits,options",
        "logfile": work / "pgbouncer.log",
        "pidfile": work / "pgbouncer.pid",
        **settings,
    }
    backend = f"host={server.get('host') or '127.0.0.1'} port={server.get('port') or 5432}"
    (work / "pgbouncer.ini").write_text(
        f"[databases]\n* = {backend}\n\n[pgbouncer]\n"
        + "".join(f"{k} = {v}\n" for k, v in options.items())
    )
    cmd = [binary, str(work / "pgbouncer.ini")]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        host = server.get("host") or ""
        if host.startswith("/"):  # a unix socket: run as its owner, who may reach it
            user = pwd.getpwuid(os.stat(host).st_uid).pw_name
        else:
            user = "postgres" if _user_exists("postgres") else "nobody"
        cmd[1:1] = ["-u", user]
        shutil.chown(work, user)
        for f in work.iterdir():
            shutil.chown(f, user)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    log = (
                        (work / "pgbouncer.log").read_text()
                        if (work / "pgbouncer.log").exists()
                        else ""
                    )
                    raise RuntimeError(
                        f"pgbouncer did not start: {proc.stderr.read()!r} {log}"
                    ) from None
                time.sleep(0.05)

        def dsn(dbname: str, user: str | None = None) -> str:
            return make_conninfo("", host="127.0.0.1", port=port, dbname=dbname, user=user or admin)

        dsn.port = port
        dsn.log = work / "pgbouncer.log"
        yield dsn
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
