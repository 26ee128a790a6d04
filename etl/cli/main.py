"""The entry point: etl's global options hoisted in front of the subcommand, and every error
mapped to one line on stderr and an exit status (2 for operator errors; a traceback only with
--debug)."""

from __future__ import annotations

import logging
import sys

from etl.cli.app import app
from etl.cli.options import CTX
from etl.errors import EtlError, Interrupted

log = logging.getLogger("etl")

# Options of `etl` itself, also accepted after the subcommand (`etl status -v`): main() moves
# them in front. The second set takes a value.
GLOBAL_FLAGS = ("--debug", "--verbose", "-v", "--quiet", "-q")
GLOBAL_VALUED = ("--config", "--log-level", "--log-file", "--log-format")


def hoist_global_options(argv: list[str]) -> list[str]:
    """argv with etl's global options moved before the subcommand, wherever they were given
    (up to a `--`): operators type them where they think of them."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            rest.extend(argv[i:])
            break
        if a in GLOBAL_FLAGS:
            front.append(a)
        elif a in GLOBAL_VALUED and i + 1 < len(argv):
            front.extend(argv[i : i + 2])
            i += 1
        elif a.split("=", 1)[0] in GLOBAL_VALUED and "=" in a:
            front.append(a)
        else:
            rest.append(a)
        i += 1
    return front + rest


def _privilege_error(exc: BaseException) -> str | None:
    """A privilege the role lacks, met where no check came first: the object and the command
    that grants it (PostgreSQL's message names the object, not the privilege)."""
    import re

    import psycopg

    if not isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return None
    text = str(exc).splitlines()[0] if str(exc) else "permission denied"
    m = re.search(r"permission denied for (\w+) (\S+)", text)
    what = f"a privilege on {m.group(1)} {m.group(2)}" if m else "a privilege"
    role = CTX.role or "ROLE"
    return (
        f"role {role} lacks {what} ({text}): the schema owner runs "
        f"`etl grants --role {role} --apply` (etl preflight lists what is missing)"
    )


def _say_error(line: str) -> None:
    """The last line: plain text, or with --log-format json a record like every other line."""
    from etl import logs

    if logs.json_format():
        log.error(line)
    else:
        print(line, file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """Entry point. Typer/click handle usage errors (exit 2) and normal exits; every EtlError
    becomes one line on stderr with its exit status; anything else is a bug, shown in one line
    (traceback with --debug) with exit status 3."""
    args = hoist_global_options(list(sys.argv[1:] if argv is None else argv))
    try:
        app(args=args, prog_name="etl")
    except Interrupted as exc:
        _say_error(f"etl: interrupted: {exc}")
        sys.exit(exc.exit_code)
    except EtlError as exc:
        if CTX.debug:
            import traceback

            traceback.print_exc()
        _say_error(f"error: {exc}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print(
            "etl: aborted (the batch in flight was rolled back; etl migrate --resume continues)",
            file=sys.stderr,
        )
        sys.exit(130)
    except Exception as exc:
        if CTX.debug:
            raise
        missing = _privilege_error(exc)
        if missing:
            _say_error(f"error: {missing}")
            sys.exit(2)
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(
            f"error: unexpected {type(exc).__name__}: {first} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        sys.exit(3)
