"""The one interface both GPS sources implement, and the choice between them.

A source runs as one task, puts GpsFix / NoFix readings on the agent's queue
(never a 0,0 placeholder), keeps its link alive on its own (reopen/reconnect
with backoff) and describes itself in ``health()`` for the status message.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from fleet_edge.config import GpsConfig
from fleet_edge.gps.fix import GpsReading


class GpsSource(Protocol):
    async def run(self) -> None: ...

    def health(self) -> dict[str, Any]: ...


def make_gps_source(cfg: GpsConfig, out: asyncio.Queue[GpsReading]) -> GpsSource:
    if cfg.source == "gpsd":
        from fleet_edge.gps.gpsd_source import GpsdSource

        return GpsdSource(cfg, out)
    from fleet_edge.gps.serial_source import GpsSerialSource

    return GpsSerialSource(cfg, out)
