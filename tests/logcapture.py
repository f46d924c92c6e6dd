"""One way for tests to read what the project logger said: ``with LogLines() as log: ...; log.text``."""

from __future__ import annotations

import logging

from utils.logging import LOGGER


class LogLines(logging.Handler):
    """Collects the messages of the project logger (at `level` and above) while the block runs."""

    def __init__(self, level: int = logging.NOTSET):
        super().__init__(level)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def __enter__(self) -> LogLines:
        LOGGER.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        LOGGER.removeHandler(self)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)
