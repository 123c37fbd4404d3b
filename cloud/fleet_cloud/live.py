"""Latest known state of every vehicle, updated as fixes arrive.

Ingest updates it before the database commit (the live path never waits for
storage); the WebSocket hub listens to it. In one process this is memory;
across processes a Redis-backed relay feeds the same LiveState (later work).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fleet_wire import Fix

VehicleState = dict[str, Any]
Listener = Callable[[list[VehicleState]], None]


class LiveState:
    def __init__(self) -> None:
        self._states: dict[int, VehicleState] = {}
        self._listeners: list[Listener] = []
        self._local_listeners: list[Listener] = []

    def listen(self, fn: Listener) -> None:
        """Call fn with every change, wherever it was ingested (the WebSocket hub)."""
        self._listeners.append(fn)

    def listen_local(self, fn: Listener) -> None:
        """Call fn with changes ingested in this process only (the Redis relay)."""
        self._local_listeners.append(fn)

    def _emit(self, states: list[VehicleState]) -> None:
        if states:
            for fn in (*self._listeners, *self._local_listeners):
                fn(states)

    def merge(self, states: Iterable[VehicleState]) -> None:
        """Apply states relayed from another process (newest fix time wins)."""
        changed = []
        for s in states:
            cur = self._states.get(s["vehicle_id"])
            if cur is None or s.get("t") is None or (cur.get("t") or 0) <= s["t"]:
                self._states[s["vehicle_id"]] = s
                changed.append(s)
        for fn in self._listeners:
            if changed:
                fn(changed)

    def get(self, vehicle_id: int) -> VehicleState | None:
        return self._states.get(vehicle_id)

    def for_tenant(self, tenant_id: int) -> list[VehicleState]:
        return [s for s in self._states.values() if s["tenant_id"] == tenant_id]

    def __len__(self) -> int:
        return len(self._states)

    def forget(self, vehicle_id: int) -> None:
        """A deleted vehicle: no longer in snapshots (other nodes drop it at restart)."""
        self._states.pop(vehicle_id, None)

    def prime(self, states: Iterable[VehicleState]) -> None:
        for s in states:
            self._states[s["vehicle_id"]] = s

    def apply_fixes(self, tenant_id: int, vehicle_id: int, fixes: list[Fix], recv_ms: int) -> None:
        """Take the newest of these fixes if it is newer than what is known.

        Backlog from a device that was offline arrives after its live fixes;
        fix time, not arrival order, decides what "latest" is.
        """
        newest = max(fixes, key=lambda f: f.t)
        cur = self._states.get(vehicle_id)
        if cur is not None and cur.get("t") is not None and cur["t"] >= newest.t:
            return
        state: VehicleState = {
            "vehicle_id": vehicle_id,
            "tenant_id": tenant_id,
            "t": newest.t,
            "lat": newest.lat,
            "lon": newest.lon,
            "spd": newest.spd,
            "hdg": newest.hdg,
            "online": True if cur is None else cur.get("online", True),
            "recv": recv_ms,
        }
        if newest.eng is not None:
            state["eng"] = newest.eng.model_dump(exclude_none=True)
        self._states[vehicle_id] = state
        self._emit([state])

    def apply_online(self, tenant_id: int, vehicle_id: int, online: bool) -> None:
        cur = self._states.get(vehicle_id)
        if cur is not None and cur.get("online") == online:
            return
        state = dict(cur) if cur else {"vehicle_id": vehicle_id, "tenant_id": tenant_id, "t": None}
        state["online"] = online
        self._states[vehicle_id] = state
        self._emit([state])
