"""Which fixes are worth recording: a moving vehicle's shape, a parked one's heartbeat.

A fix is recorded when at least ``min_interval_s`` has passed since the last
recorded one AND one of these holds:
- ``max_interval_s`` has passed (heartbeat, also while parked);
- the vehicle moved ``min_distance_m`` from the last recorded position;
- the course turned by ``heading_change_deg`` while moving faster than
  ``heading_min_speed_kmh`` (slower, the course is receiver noise).
The first fix is always recorded. Times are fix times (GNSS clock), so a
backlog of fixes replayed quickly is sampled as if in real time.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleet_edge.config import SamplerConfig
from fleet_edge.geo import haversine_m, heading_delta_deg
from fleet_edge.gps.fix import GpsFix


@dataclass
class SamplerStats:
    seen: int = 0
    recorded: int = 0


class Sampler:
    def __init__(self, cfg: SamplerConfig) -> None:
        self._cfg = cfg
        self._last: GpsFix | None = None
        self.stats = SamplerStats()

    def accept(self, fix: GpsFix) -> bool:
        """Decide on one fix; a recorded fix becomes the reference for the next."""
        self.stats.seen += 1
        if self._record(fix):
            self._last = fix
            self.stats.recorded += 1
            return True
        return False

    def _record(self, fix: GpsFix) -> bool:
        last = self._last
        if last is None:
            return True
        elapsed_s = (fix.t - last.t) / 1000.0
        if elapsed_s < 0:
            # The receiver's clock went backwards (reset, rollover bug): start
            # over from this fix rather than stay silent until it catches up.
            return True
        if elapsed_s < self._cfg.min_interval_s or elapsed_s == 0:
            return False
        if elapsed_s >= self._cfg.max_interval_s:
            return True
        if haversine_m(last.lat, last.lon, fix.lat, fix.lon) >= self._cfg.min_distance_m:
            return True
        return self._turned(last, fix)

    def _turned(self, last: GpsFix, fix: GpsFix) -> bool:
        if last.course_deg is None or fix.course_deg is None:
            return False
        if (fix.speed_kmh or 0.0) < self._cfg.heading_min_speed_kmh:
            return False
        return heading_delta_deg(last.course_deg, fix.course_deg) >= self._cfg.heading_change_deg
