"""The simulators' ground truth: what they sent, as JSON Lines.

A fault test later compares this with the database (missing, duplicated, out
of order). The file is opened for append and unbuffered, and every call is
one ``write``, so each record reaches the kernel as soon as it is known: a
simulator killed with SIGKILL leaves no half-logged record behind, and two
simulators may share one file (O_APPEND keeps their lines whole).

Records (keys short like the wire's):

- ``{"src":"gps","t":ms,"lat":..,"lon":..,"spd":..}``: one epoch with a fix
  written to the pseudo-terminal. lat/lon are what a reader parses back from the
  NMEA text, rounded to 6 decimals; spd is km/h (from VTG) rounded to 1. An
  optional ``"bad":["RMC",...]`` lists that epoch's position sentences whose
  checksum fault injection broke (a strict reader cannot have them).
- ``{"src":"fleet","dev":..,"boot":..,"seq":..,"t":..,"lat":..,"lon":..,"spd":..}``:
  one fix a simulated vehicle recorded, exactly as it is put on the wire.
- ``{"src":"fleet","dev":..,"boot":..,"seq":..,"drop":"cap"}``: a fix the
  vehicle's bounded memory gave up on before the cloud acked it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson


class Oracle:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        data = b"".join(orjson.dumps(r) + b"\n" for r in records)
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Oracle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
