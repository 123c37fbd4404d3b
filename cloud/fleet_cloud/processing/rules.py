"""Rule parameters: defaults, overridden per tenant and per vehicle (event_rules)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SEVERITIES = ("info", "warning", "critical")

# type -> (severity, params). Units are in the names.
DEFAULTS: dict[str, tuple[str, dict[str, Any]]] = {
    "geofence_enter": ("info", {}),
    "geofence_exit": ("info", {}),
    "geofence_dwell": ("info", {}),
    "overspeed": ("warning", {"limit_kmh": None, "min_duration_s": 10.0, "tolerance_kmh": 0.0}),
    # threshold_ms2 applies to speed deltas between fixes (an average over up to
    # max_gap_s); imu_threshold_ms2 to accelerometer peaks, which run higher
    # for the same manoeuvre (about 0.45 g braking, 0.35 g launch, 0.4 g turn).
    "harsh_braking": (
        "warning",
        {"threshold_ms2": 4.0, "max_gap_s": 5.0, "imu_threshold_ms2": 4.5},
    ),
    "harsh_acceleration": (
        "warning",
        {"threshold_ms2": 3.0, "max_gap_s": 5.0, "imu_threshold_ms2": 3.5},
    ),
    "harsh_cornering": ("warning", {"imu_threshold_ms2": 4.0}),  # accelerometer only
    "idling": ("info", {"min_duration_s": 300.0, "max_speed_kmh": 3.0}),
    "ignition_on": ("info", {}),
    "ignition_off": ("info", {}),
    "motion_start": ("info", {"speed_kmh": 5.0, "min_duration_s": 5.0}),
    "motion_stop": ("info", {"speed_kmh": 2.0, "min_duration_s": 120.0}),
    "low_battery": ("warning", {"below_v": 11.8, "rearm_v": 12.4, "min_duration_s": 60.0}),
    "dtc_new": ("warning", {}),
    "engine_temp_high": ("critical", {"above_c": 110.0, "rearm_c": 100.0}),
    "fuel_drop": ("warning", {"drop_pct": 10.0, "window_s": 600.0, "max_speed_kmh": 5.0}),
    "refuel": ("info", {"rise_pct": 15.0, "window_s": 600.0}),
    "maintenance_due": ("warning", {"every_km": None, "every_engine_h": None}),
    "visit_arrived": ("info", {}),
    "visit_completed": ("info", {}),
    "visit_skipped": ("warning", {}),
    "visit_failed": ("warning", {}),
    "route_deviation": ("warning", {}),
    "device_online": ("info", {}),
    "device_offline": ("warning", {"inactivity_s": 900.0}),
}
EVENT_TYPES = tuple(DEFAULTS)

# Alerts per rule per vehicle per hour of fix time before further ones are
# stored as throttled (kept, shown, not notified).
DEFAULT_THROTTLE_PER_HOUR = 10

# Trip/stop segmentation, Traccar-like names and defaults.
TRIP_DEFAULTS: dict[str, Any] = {
    "speed_kmh": 5.0,  # moving above this
    "min_trip_distance_m": 500.0,
    "min_trip_duration_s": 300.0,
    "min_parking_duration_s": 300.0,
    "min_no_data_duration_s": 3600.0,
    "use_ignition": False,
    "tank_l": None,  # fuel tank size: turns a fuel-level drop into litres
}


@dataclass
class RuleSet:
    """Effective rules of one vehicle."""

    enabled: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(DEFAULTS, True))
    severity: dict[str, str] = field(default_factory=lambda: {k: v[0] for k, v in DEFAULTS.items()})
    params: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {k: dict(v[1]) for k, v in DEFAULTS.items()}
    )
    trips: dict[str, Any] = field(default_factory=lambda: dict(TRIP_DEFAULTS))
    throttle_per_hour: int = DEFAULT_THROTTLE_PER_HOUR

    def p(self, rule: str, name: str) -> Any:
        return self.params[rule].get(name)

    def apply(self, rule: str, enabled: bool, severity: str | None, params: dict[str, Any]) -> None:
        if rule == "trips":
            self.trips.update(params)
            return
        if rule == "throttle":
            self.throttle_per_hour = int(params.get("per_hour", self.throttle_per_hour))
            return
        if rule not in DEFAULTS:
            return
        self.enabled[rule] = enabled
        if severity:
            self.severity[rule] = severity
        self.params[rule].update(params)


RULE_NAMES = (*EVENT_TYPES, "trips", "throttle")
