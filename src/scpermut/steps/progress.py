"""What a long chained run tells its user: a line per step, and the warnings its report lists."""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)


class Progress:
    """One log line when a step starts and one when it ends, with its rank and duration."""

    def __init__(self, steps: list[str]):
        self.steps = steps
        self.seconds: dict[str, float] = {}
        self._started = time.time()
        self._step_started = self._started

    def _rank(self, step: str) -> str:
        return f"[{self.steps.index(step) + 1}/{len(self.steps)}] {step}"

    def start(self, step: str) -> None:
        self._step_started = time.time()
        self.seconds.setdefault("total", 0.0)
        log.info("%s ...", self._rank(step))

    def reused(self, step: str) -> None:
        log.info("%s: reused from the interrupted run", self._rank(step))

    def done(self, step: str, message: str) -> None:
        now = time.time()
        self.seconds[step] = round(now - self._step_started, 2)
        self.seconds["total"] = round(now - self._started, 2)
        log.info("%s done in %.1f s: %s", self._rank(step), self.seconds[step], message)


class WarningCollector(logging.Handler):
    """Keeps the text of every warning the package logs while it is attached (``with``), for the report.

    ``messages`` holds each warning once: the same warning about several files (``a.h5ad: no
    mitochondrial gene``, ``b.h5ad: ...``) becomes one line naming them all (``a.h5ad, b.h5ad: ...``).
    """

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []
        self._sources: dict[str, list[str]] = {}  # message without its source -> the sources, in order

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        source, separator, rest = message.partition(": ")
        if not separator or " " in source:
            source, rest = "", message
        sources = self._sources.setdefault(rest, [])
        if source not in sources:
            sources.append(source)
        # The list object is shared with the run's steps: rebuilt in place.
        self.messages[:] = [
            f"{', '.join(s for s in sources if s)}: {rest}" if any(sources) else rest for rest, sources in self._sources.items()
        ]

    def __enter__(self) -> WarningCollector:
        logging.getLogger("scpermut").addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger("scpermut").removeHandler(self)
