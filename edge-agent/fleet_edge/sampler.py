"""Which fixes are worth recording: a moving vehicle's shape, a parked one's heartbeat, events.

A fix is recorded when at least ``min_interval_s`` has passed since the last
recorded one AND one of these holds:
- ``max_interval_s`` has passed (heartbeat, also while parked);
- the vehicle moved ``min_distance_m`` from the last recorded position;
- the course turned by ``heading_change_deg`` while moving faster than
  ``heading_min_speed_kmh`` (slower, the course is receiver noise).

Events are recorded at once, whatever ``min_interval_s`` says:
- ignition on / off (``on_ignition``; the state comes from the OBD poller);
- start / stop moving (``on_motion``): moving from ``motion_start_kmh`` up,
  stopped once below ``motion_stop_kmh`` for ``motion_stop_s``. The gap
  between the two thresholds keeps GPS speed jitter from flapping the state.

The first fix is always recorded. Times are fix times (GNSS clock), so a
backlog of fixes replayed quickly is sampled as if in real time.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from fleet_edge.config import SamplerConfig
from fleet_edge.geo import haversine_m, heading_delta_deg
from fleet_edge.gps.fix import GpsFix

IGNITION_ON = "ignition_on"
IGNITION_OFF = "ignition_off"
START_MOVING = "start_moving"
STOP_MOVING = "stop_moving"


@dataclass
class SamplerStats:
    seen: int = 0
    recorded: int = 0
    events: Counter[str] = field(default_factory=Counter)  # by kind


class Sampler:
    def __init__(self, cfg: SamplerConfig) -> None:
        self._cfg = cfg
        self._last: GpsFix | None = None
        self._ignition: bool | None = None
        self._moving: bool | None = None
        self._slow_since: int | None = None  # fix time the speed fell below motion_stop_kmh
        self.stats = SamplerStats()
        self.last_event: str | None = None  # the event of the fix just recorded, if any

    def reconfigure(self, cfg: SamplerConfig) -> None:
        """New thresholds (remote config); the reference fix and the states are kept."""
        self._cfg = cfg

    @property
    def moving(self) -> bool | None:
        return self._moving

    def accept(self, fix: GpsFix, ignition: bool | None = None) -> bool:
        """Decide on one fix; a recorded fix becomes the reference for the next.

        ``ignition`` is the engine's state when the fix arrived (None: unknown).
        """
        self.stats.seen += 1
        event = self._event(fix, ignition)
        if self._record(fix, event):
            self._last = fix
            self.stats.recorded += 1
            self.last_event = event
            if event is not None:
                self.stats.events[event] += 1
            return True
        self.last_event = None
        return False

    def _event(self, fix: GpsFix, ignition: bool | None) -> str | None:
        """Update the ignition and motion states; the event this fix marks, if any."""
        event: str | None = None
        if ignition is not None:
            if self._ignition is not None and ignition != self._ignition and self._cfg.on_ignition:
                event = IGNITION_ON if ignition else IGNITION_OFF
            self._ignition = ignition
        speed = fix.speed_kmh
        if speed is None:
            return event
        if speed >= self._cfg.motion_start_kmh:
            self._slow_since = None
            if self._moving is False and self._cfg.on_motion:
                event = event or START_MOVING
            self._moving = True
        elif speed < self._cfg.motion_stop_kmh:
            if self._slow_since is None:
                self._slow_since = fix.t
            slow_s = (fix.t - self._slow_since) / 1000.0
            if self._moving is None:
                self._moving = False
            elif self._moving and slow_s >= self._cfg.motion_stop_s:
                self._moving = False
                if self._cfg.on_motion:
                    event = event or STOP_MOVING
        else:
            self._slow_since = None  # between the thresholds: the state holds
        return event

    def _record(self, fix: GpsFix, event: str | None) -> bool:
        last = self._last
        if last is None:
            return True
        elapsed_s = (fix.t - last.t) / 1000.0
        if elapsed_s < 0:
            # The receiver's clock went backwards (reset, rollover bug): start
            # over from this fix rather than stay silent until it catches up.
            return True
        if elapsed_s == 0:
            return False
        if event is not None:
            return True
        if elapsed_s < self._cfg.min_interval_s:
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
