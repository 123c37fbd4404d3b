"""A deterministic vehicle driving a closed loop through a city.

One seed gives one vehicle: where in the city its loop lies, the loop's shape,
its roads' speed limits, the driver's temperament, the lights it meets and the
receiver's noise. The same seed always gives the same fixes (with the same
``start_ms``), so a failing test or a fleet run can be replayed.

The model works in metres in a local east/north plane (see ``geo``) and is
physical enough for the cloud's filters and trip detection to have something
real to chew on:

- roads are straight between corners, each with a limit of 30..100 km/h, cut
  into legs by intermediate intersections;
- the driver accelerates and brakes within limits, never exceeds the limit of
  the road it is on, slows for corners, stops at red lights (dwell of seconds)
  and sometimes parks (minutes);
- the receiver adds slowly wandering position noise scaled by HDOP, has a
  drifting satellite count, and now and then loses the fix (a tunnel, a
  multi-storey car park).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

from fleet_sim.geo import LocalFrame, heading_of, offset

BERLIN = (52.52, 13.40)
# Loops are centred anywhere within this distance of the city centre.
CITY_RADIUS_M = 8_000.0

# Speed limits of the roads (km/h) and how common each is in a city.
ROAD_LIMITS_KMH = (30, 50, 60, 70, 80, 100)
ROAD_LIMIT_WEIGHTS = (2.0, 5.0, 1.0, 1.5, 1.0, 0.6)

# Braking: what a driver does when it sees a stop coming, and the most the
# model ever applies (a firm stop, not an emergency one).
BRAKE_COMFORT_MS2 = 1.8
BRAKE_MAX_MS2 = 3.5

# What happens at the end of a leg (an intersection).
P_PARK = 0.012  # stops for minutes (delivery, lunch, customer)
P_LIGHT_CORNER = 0.45  # red light where the road turns
P_LIGHT_STRAIGHT = 0.22  # red light at a crossing on a straight road
PARK_S = (120.0, 900.0)
LIGHT_S = (5.0, 45.0)

# The share of the road's limit a driver uses wanders within this range.
SPEED_SHARE = (0.75, 1.0)

# Physics runs in steps of at most this, whatever the output rate.
MAX_PHYSICS_STEP_S = 1.0

# Receiver behaviour.
OUTAGE_MEAN_INTERVAL_S = 1_800.0  # about one fix loss per half hour of driving
OUTAGE_S = (5.0, 40.0)
SATS_RANGE = (5, 14)
NOISE_TAU_S = 30.0  # GNSS error wanders slowly; it is not white noise
NOISE_M_PER_HDOP = 1.2
NO_FIX_HDOP = 99.99  # what receivers print when they have nothing
# MSL altitude of the city and how much its terrain rolls.
BASE_ALT_M = (30.0, 60.0)


@dataclass(frozen=True, slots=True)
class SimFix:
    """What an ideal GNSS receiver reports for one epoch.

    With ``fix_type`` 0 the receiver has no fix: the position fields are the
    ground truth the receiver could not see and must not be reported.
    """

    t_ms: int  # UTC ms, a multiple of 10 (NMEA time has centisecond resolution)
    lat: float
    lon: float
    speed_kmh: float
    heading_deg: float  # course over ground, 0..360
    alt_m: float  # above mean sea level
    hdop: float
    sats: int  # satellites used in the fix
    fix_type: int  # 0 none, 2 = 2D, 3 = 3D


@dataclass(frozen=True, slots=True)
class Leg:
    """A straight piece of road between two intersections, in local metres."""

    x0: float
    y0: float
    x1: float
    y1: float
    limit_kmh: int

    @property
    def length(self) -> float:
        return math.hypot(self.x1 - self.x0, self.y1 - self.y0)

    @property
    def heading(self) -> float:
        return heading_of(self.x1 - self.x0, self.y1 - self.y0)


def _turn_angle(a: Leg, b: Leg) -> float:
    """How far the road turns from leg a onto leg b, 0..180 degrees."""
    d = abs(b.heading - a.heading) % 360.0
    return 360.0 - d if d > 180.0 else d


def _corner_speed_ms(turn_deg: float) -> float:
    """How fast a driver takes a corner: straight on is unconstrained."""
    if turn_deg < 15.0:
        return math.inf
    return max(12.0, 55.0 - 0.45 * turn_deg) / 3.6


def build_loop(rng: random.Random) -> list[Leg]:
    """A closed loop of roads around the local origin (metres), cut into legs."""
    radius = rng.uniform(700.0, 2_500.0)
    stretch = rng.uniform(0.7, 1.4)  # loops are ellipses, not circles
    n = rng.randint(7, 14)
    direction = rng.choice((1.0, -1.0))
    corners: list[tuple[float, float]] = []
    for i in range(n):
        a = direction * (2 * math.pi * (i + rng.uniform(-0.3, 0.3)) / n)
        r = radius * rng.uniform(0.65, 1.25)
        corners.append((r * math.cos(a) * stretch, r * math.sin(a) / stretch))
    legs: list[Leg] = []
    for i, (x0, y0) in enumerate(corners):
        x1, y1 = corners[(i + 1) % n]
        limit = rng.choices(ROAD_LIMITS_KMH, ROAD_LIMIT_WEIGHTS)[0]
        road = math.hypot(x1 - x0, y1 - y0)
        pieces = max(1, math.ceil(road / rng.uniform(300.0, 600.0)))
        for p in range(pieces):
            f0, f1 = p / pieces, (p + 1) / pieces
            legs.append(
                Leg(
                    x0 + (x1 - x0) * f0,
                    y0 + (y1 - y0) * f0,
                    x0 + (x1 - x0) * f1,
                    y0 + (y1 - y0) * f1,
                    limit,
                )
            )
    return legs


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class RouteSim:
    """One simulated vehicle and its receiver, stepped at ``hz`` fixes per second.

    ``start_ms`` is the fix time of the first step (default: the next whole
    second of the wall clock); it is rounded up to a multiple of 10 ms.
    """

    def __init__(
        self,
        seed: int,
        hz: float = 1.0,
        start_ms: int | None = None,
        *,
        center: tuple[float, float] = BERLIN,
        outages: bool = True,
    ) -> None:
        if not 0 < hz <= 100:
            raise ValueError(f"hz must be in (0, 100], got {hz}")
        self.seed = seed
        self.hz = hz
        if start_ms is None:
            start_ms = (_now_ms() // 1000 + 1) * 1000
        self.start_ms = -(-start_ms // 10) * 10
        self.outages = outages

        # Separate streams: the layout must not change when, say, the noise
        # model draws one more number.
        layout = random.Random(f"fleet-sim/route/{seed}")
        self._rng = random.Random(f"fleet-sim/drive/{seed}")
        self._rx = random.Random(f"fleet-sim/receiver/{seed}")

        dist = CITY_RADIUS_M * math.sqrt(layout.random())
        lat0, lon0 = offset(center[0], center[1], dist, layout.uniform(0.0, 360.0))
        self.frame = LocalFrame(lat0, lon0)
        self.legs = build_loop(layout)
        self._accel = layout.uniform(1.3, 2.3)  # this driver's launch
        self._base_alt = layout.uniform(*BASE_ALT_M)
        self._terrain = (layout.uniform(0, 2 * math.pi), layout.uniform(0, 2 * math.pi))

        # Driving state.
        self._leg = layout.randrange(len(self.legs))
        self._s = 0.0  # metres along the current leg
        self._v = 0.0  # m/s
        self._dwell = 0.0  # seconds left standing still
        self._heading = self.legs[self._leg].heading
        self._target = 1.0  # share of the limit the driver aims at on this leg
        self._end_dwell = 0.0  # standing time at this leg's end (0: drive through)
        self._v_end = 0.0  # m/s to reach this leg's end with when driving through
        self._enter_leg()
        self._factor = self._target  # share of the limit the driver uses right now

        # Receiver state.
        self._sats = self._rx.randint(8, 12)
        self._outage = 0.0
        self._noise = [0.0, 0.0, 0.0]  # east, north, up (metres)

        self._k = 0
        self._last_t = self.start_ms

    # -- public view ---------------------------------------------------------

    @property
    def next_t_ms(self) -> int:
        """Fix time the next ``step()`` will have."""
        return self.start_ms + 10 * int(self._k * 100 / self.hz + 0.5)

    @property
    def segment_limit_kmh(self) -> int:
        """Speed limit of the road the vehicle is on now."""
        return self.legs[self._leg].limit_kmh

    @property
    def loop_length_m(self) -> float:
        return sum(leg.length for leg in self.legs)

    def step(self) -> SimFix:
        """Advance to the next epoch and return what the receiver reports."""
        t = self.next_t_ms
        dt = (t - self._last_t) / 1000.0
        self._k += 1
        self._last_t = t
        left = dt
        while left > 1e-9:
            h = min(left, MAX_PHYSICS_STEP_S)
            self._drive(h)
            left -= h
        return self._receive(t, dt)

    # -- driving -------------------------------------------------------------

    def _next(self, i: int) -> int:
        return (i + 1) % len(self.legs)

    def _enter_leg(self) -> None:
        """Decide how this leg is driven and what waits at its end."""
        leg = self.legs[self._leg]
        nxt = self.legs[self._next(self._leg)]
        self._target = self._rng.uniform(0.85, 1.0)  # share of the limit this driver uses here
        turn = _turn_angle(leg, nxt)
        p_light = P_LIGHT_CORNER if turn >= 15.0 else P_LIGHT_STRAIGHT
        r = self._rng.random()
        if r < P_PARK:
            self._end_dwell = self._rng.uniform(*PARK_S)
        elif r < P_PARK + p_light:
            self._end_dwell = self._rng.uniform(*LIGHT_S)
        else:
            self._end_dwell = 0.0
        # Reach the corner no faster than it can be taken and, onto a slower
        # road, than that road allows whatever share of its limit the driver uses.
        self._v_end = _corner_speed_ms(turn)
        if nxt.limit_kmh < leg.limit_kmh:
            self._v_end = min(self._v_end, nxt.limit_kmh / 3.6 * SPEED_SHARE[0])

    def _drive(self, dt: float) -> None:
        if self._dwell > 0.0:
            self._dwell = max(0.0, self._dwell - dt)
            self._v = 0.0
            return
        # Nobody holds a speed exactly: the share of the limit wanders about
        # this leg's target (mean-reverting), never above the limit itself.
        self._factor += 0.1 * (self._target - self._factor) * dt + self._rng.gauss(
            0.0, 0.012 * math.sqrt(dt)
        )
        self._factor = min(SPEED_SHARE[1], max(SPEED_SHARE[0], self._factor))
        leg = self.legs[self._leg]
        d_rem = max(0.0, leg.length - self._s)
        stopping = self._end_dwell > 0.0
        v_end = 0.0 if stopping else self._v_end
        desired = leg.limit_kmh / 3.6 * self._factor
        v = self._v
        # The deceleration that reaches v_end exactly at the end of the leg:
        # once it is as much as a driver comfortably brakes, brake with it.
        a_req = (v * v - v_end * v_end) / (2.0 * d_rem) if v > v_end and d_rem > 0.0 else 0.0
        if a_req >= BRAKE_COMFORT_MS2:
            a = min(a_req, BRAKE_MAX_MS2)
            if stopping and v <= a * dt:
                self._arrive()  # comes to rest at the line within this step
                return
            v_new = max(v_end, v - a * dt)
        elif v > desired:
            v_new = max(desired, v - BRAKE_COMFORT_MS2 * dt)
        else:
            # Speed up, but never past what still allows a comfortable stop
            # (or corner) at the end of the leg after this step.
            ahead = max(0.0, d_rem - v * dt)
            v_new = min(
                desired,
                v + self._accel * dt,
                math.sqrt(v_end * v_end + 2.0 * BRAKE_COMFORT_MS2 * ahead),
            )
            v_new = max(v_new, v - BRAKE_MAX_MS2 * dt)
        dist = (v + v_new) / 2.0 * dt
        if v_new > 0.0:
            self._heading = leg.heading
        # At (or all but at) the line with next to no speed left: that is the stop.
        if stopping and (dist >= d_rem or (v_new < 0.5 and d_rem - dist < 2.0)):
            self._arrive()
            return
        s = self._s + dist
        while s >= self.legs[self._leg].length:
            s -= self.legs[self._leg].length
            self._leg = self._next(self._leg)
            self._enter_leg()
            nxt = self.legs[self._leg]
            # Entering a slower road: the braking curve aimed at this already,
            # the clamp only removes the last fraction of a discretisation step.
            v_new = min(v_new, nxt.limit_kmh / 3.6 * self._factor)
            self._heading = nxt.heading
        self._s = s
        self._v = v_new

    def _arrive(self) -> None:
        """Standing at the stop line (or parked at the kerb) at this leg's end."""
        self._v = 0.0
        self._dwell = self._end_dwell
        self._leg = self._next(self._leg)
        self._s = 0.0
        self._enter_leg()

    def _position_xy(self) -> tuple[float, float]:
        leg = self.legs[self._leg]
        f = self._s / leg.length if leg.length > 0 else 0.0
        return leg.x0 + (leg.x1 - leg.x0) * f, leg.y0 + (leg.y1 - leg.y0) * f

    # -- receiver ------------------------------------------------------------

    def _receive(self, t_ms: int, dt: float) -> SimFix:
        rx = self._rx
        if self._outage > 0.0:
            self._outage = max(0.0, self._outage - dt)
        elif self.outages and dt > 0 and rx.random() < dt / OUTAGE_MEAN_INTERVAL_S:
            self._outage = rx.uniform(*OUTAGE_S)
        # The satellite count drifts by one now and then, leaning to the middle.
        if rx.random() < min(1.0, 0.03 * dt):
            lo, hi = SATS_RANGE
            toward_mid = 1 if self._sats < (lo + hi) / 2 else -1
            step = toward_mid if rx.random() < 0.6 else -toward_mid
            self._sats = min(hi, max(lo, self._sats + step))

        if self._outage > 0.0:
            sats = rx.randint(0, 2)
        else:
            sats = self._sats
        fix_type = 3 if sats >= 4 else 2 if sats == 3 else 0
        hdop = (
            round(max(0.5, 0.45 + 5.0 / sats + rx.gauss(0.0, 0.05)), 2) if fix_type else NO_FIX_HDOP
        )

        # Slowly wandering error (first-order Gauss-Markov), bigger with worse
        # geometry. Without a fix nothing is measured, so it holds still.
        if fix_type:
            phi = math.exp(-dt / NOISE_TAU_S)
            k = math.sqrt(1.0 - phi * phi) * NOISE_M_PER_HDOP * hdop
            self._noise = [
                phi * self._noise[0] + k * rx.gauss(0.0, 1.0),
                phi * self._noise[1] + k * rx.gauss(0.0, 1.0),
                phi * self._noise[2] + 1.8 * k * rx.gauss(0.0, 1.0),  # vertical is worse
            ]

        x, y = self._position_xy()
        lat, lon = self.frame.to_latlon(x + self._noise[0], y + self._noise[1])
        p1, p2 = self._terrain
        alt = (
            self._base_alt
            + 6.0 * math.sin(x / 900.0 + p1)
            + 4.0 * math.cos(y / 1_300.0 + p2)
            + self._noise[2]
        )
        return SimFix(
            t_ms=t_ms,
            lat=lat,
            lon=lon,
            speed_kmh=self._v * 3.6,
            heading_deg=self._heading % 360.0,
            alt_m=alt,
            hdop=hdop,
            sats=sats,
            fix_type=fix_type,
        )
