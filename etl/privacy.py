"""Personal data in messages: reject reasons, warnings and logs quote no field value (resumes
are personal data) unless the operator asks with --show-values. The flag is an environment
variable so that worker processes see it as the command line's process does."""

from __future__ import annotations

import os
import re
from typing import Any

ENV = "ETL_SHOW_VALUES"


def show_values() -> bool:
    return os.environ.get(ENV) == "1"


def shown(v: Any, n: int = 60) -> str:
    """The value, shortened, with --show-values; else only its type and size."""
    from etl.jsonutil import dumps_str, type_name

    if not show_values():
        size = f", {len(v)} characters" if isinstance(v, str) else ""
        return f"<{type_name(v)}{size}, value not shown>"
    try:
        s = dumps_str(v)
    except Exception:  # noqa: BLE001 - only for a message
        s = repr(v)
    return s if len(s) <= n else s[: n - 3] + "..."


# PostgreSQL quotes values in its messages: invalid input syntax for type x: "value", and
# DETAIL: Key (col)=(value) already exists / Failing row contains (...)
_QUOTED = re.compile(r'"(?:[^"]|"")*"')
_PARENS = re.compile(r"=\((.*?)\)(?= |$|\))|contains \(.*\)")


def scrub_db_message(text: str) -> str:
    """A PostgreSQL error message without the values it quotes (unless --show-values)."""
    if show_values():
        return text
    text = _QUOTED.sub('"..."', text)
    return _PARENS.sub(lambda m: "=(...)" if m.group(0).startswith("=") else "contains (...)", text)
