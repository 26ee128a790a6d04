"""The one summary shape every command reports from: a header that every run has (its id,
command, state, times, source, target, error) and a per-command body. The JSON report, the
Markdown and HTML reports and the terminal summary are all made from asdict(); the etl_runs
row keeps row(). How a run ended is decided once, by outcome()."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from etl.errors import EtlError, Interrupted

HEADER = ("run_id", "command", "state", "started_at", "finished_at", "source", "target", "error")


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def outcome(exc: BaseException | None) -> tuple[str, str | None]:
    """A run's end state and error from what ended it (None: it ran to the end). Ctrl-C, at a
    batch boundary (Interrupted) or anywhere else, leaves the run interrupted (resumable)."""
    if exc is None:
        return "finished", None
    if isinstance(exc, Interrupted):
        return "interrupted", str(exc) or "interrupted by the user"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", "interrupted by the user"
    if isinstance(exc, EtlError):
        return "failed", str(exc)
    return "failed", f"{type(exc).__name__}: {exc}"


@contextmanager
def concluded(close: Callable[[str, str | None], None]) -> Iterator[None]:
    """Run the body, then close(state, error) exactly once, whatever happened; what ended the
    body is raised again after it."""
    try:
        yield
    except BaseException as exc:
        close(*outcome(exc))
        raise
    close("finished", None)


@dataclass(kw_only=True)
class Summary:
    """The header of a run's summary; subclasses add their command's body()."""

    run_id: str
    command: str
    state: str = "running"
    started_at: str = field(default_factory=now_iso)
    finished_at: str | None = None
    source: str = ""  # what is read, without credentials ("" until known)
    target: str = ""  # what is written
    error: str | None = None

    def end(self, state: str, error: str | None = None) -> None:
        self.state, self.error = state, error

    def stamp(self) -> None:
        """The end time, once."""
        if self.finished_at is None:
            self.finished_at = now_iso()

    def header(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in HEADER}

    def body(self) -> dict[str, Any]:
        return {}

    def asdict(self) -> dict[str, Any]:
        return {**self.header(), **self.body()}

    def row(self) -> dict[str, Any]:
        """What etl_runs.summary keeps (by default the whole summary)."""
        return self.asdict()


@dataclass(kw_only=True)
class DocSummary(Summary):
    """A summary whose body is an open set of keys (sync, cutover, fallback): it reads and
    writes like the dict it is reported as, header keys going to the header."""

    doc: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return dict(self.doc)

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key) if key in HEADER else self.doc[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if key in HEADER:
            setattr(self, key, value)
        else:
            self.doc[key] = value

    def __contains__(self, key: str) -> bool:
        return key in HEADER or key in self.doc

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default
