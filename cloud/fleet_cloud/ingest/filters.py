"""Plausibility filters: well-formed fixes that cannot be right.

A filtered fix is stored with its reason code (positions.filter_reason) and
acked like any other: the device was right to send it, and an operator can
see why it is not on the map. It is left out of live state, history and
everything derived from positions.

Reason codes:
  invalid_fix   the receiver's own quality says so (HDOP over the limit, too few satellites)
  zero_position exactly 0,0 ("null island"), what broken receivers print
  future        fix time ahead of the cloud's clock by more than the allowed skew
  too_old       fix time older than the oldest backlog we accept
  duplicate     same fix time as the previous fix of the device under another seq
  speed_jump    the distance from the previous fix implies an impossible speed

The implied-speed and duplicate checks compare with the last fix this worker
accepted from the device. Several workers split a device's messages between
them, so each sees a subset: a jump is still caught (over a longer interval),
and exact per-vehicle order is the processing stage's business.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from fleet_cloud.processing.geo import haversine_m
from fleet_wire import Fix

INVALID_FIX = "invalid_fix"
ZERO_POSITION = "zero_position"
FUTURE = "future"
TOO_OLD = "too_old"
DUPLICATE = "duplicate"
SPEED_JUMP = "speed_jump"
REASONS = (INVALID_FIX, ZERO_POSITION, FUTURE, TOO_OLD, DUPLICATE, SPEED_JUMP)

# Below this distance an implied speed is GNSS jitter, not a jump.
_JUMP_MIN_DISTANCE_M = 500.0


@dataclass(frozen=True, slots=True)
class FilterLimits:
    max_speed_kmh: float = 300.0
    future_skew_s: float = 300.0
    max_age_days: float = 90.0
    max_hdop: float = 20.0
    min_sats: int = 3  # 0 turns the satellite check off

    def merged(self, overrides: dict[str, float | int] | None) -> FilterLimits:
        """These limits with a device's overrides (unknown keys are ignored)."""
        if not overrides:
            return self
        known = {k: v for k, v in overrides.items() if k in self.__dataclass_fields__}
        return FilterLimits(**{**self._asdict(), **known})  # type: ignore[arg-type]

    def _asdict(self) -> dict[str, float | int]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class PlausibilityFilter:
    def __init__(self, limits: FilterLimits, max_devices: int = 200_000) -> None:
        self.limits = limits
        self._max_devices = max_devices
        # device -> (t, seq, lat, lon) of the newest accepted fix
        self._last: OrderedDict[str, tuple[int, int, float, float]] = OrderedDict()

    def check(
        self, device_id: str, fix: Fix, recv_ms: int, limits: FilterLimits | None = None
    ) -> str | None:
        """The reason this fix is implausible, or None. Accepted fixes become the reference."""
        lim = limits or self.limits
        if (fix.hdop is not None and fix.hdop > lim.max_hdop) or (
            lim.min_sats and fix.sat is not None and fix.sat < lim.min_sats
        ):
            return INVALID_FIX
        if fix.lat == 0.0 and fix.lon == 0.0:
            return ZERO_POSITION
        if fix.t > recv_ms + lim.future_skew_s * 1000:
            return FUTURE
        if fix.t < recv_ms - lim.max_age_days * 86_400_000:
            return TOO_OLD
        last = self._last.get(device_id)
        if last is not None:
            t0, seq0, lat0, lon0 = last
            if fix.t == t0 and fix.seq != seq0:
                return DUPLICATE
            if fix.t > t0:  # in order: compare; a late (backlog) fix is not judged by a newer one
                dist = haversine_m(lat0, lon0, fix.lat, fix.lon)
                hours = (fix.t - t0) / 3_600_000
                if dist > _JUMP_MIN_DISTANCE_M and dist / 1000 / hours > lim.max_speed_kmh:
                    return SPEED_JUMP
        if last is None or fix.t > last[0]:
            self._remember(device_id, (fix.t, fix.seq, fix.lat, fix.lon))
        return None

    def _remember(self, device_id: str, entry: tuple[int, int, float, float]) -> None:
        self._last[device_id] = entry
        self._last.move_to_end(device_id)
        if len(self._last) > self._max_devices:
            self._last.popitem(last=False)
