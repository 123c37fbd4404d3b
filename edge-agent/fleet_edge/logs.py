"""Logging to stdout for journald: concise lines, priorities journald understands."""

from __future__ import annotations

import logging
import os
import sys
import time

# systemd reads a "<N>" prefix on a stdout line as its syslog priority, so
# `journalctl -p warning` works without a journald client library.
_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"<{_PRIORITY.get(record.levelno, 6)}>{super().format(record)}"


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stdout)
    if os.environ.get("JOURNAL_STREAM"):
        # journald stamps the time and the level itself.
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    set_log_level(level)


def set_log_level(level: str) -> None:
    """Also used live, when remote config changes ``log_level``."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    # paho's per-packet chatter is only useful when debugging.
    mqtt_level = logging.NOTSET if root.level <= logging.DEBUG else logging.WARNING
    logging.getLogger("fleet_edge.mqtt").setLevel(mqtt_level)


class Every:
    """Lets a repeated warning through at most once per period (journald is on the SD card too)."""

    def __init__(self, period_s: float) -> None:
        self._period = period_s
        self._last: float | None = None

    def due(self) -> bool:
        now = time.monotonic()
        if self._last is None or now - self._last >= self._period:
            self._last = now
            return True
        return False
