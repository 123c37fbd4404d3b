"""Commands from ``down/cmd``: each runs at most once, never after its expiry, and gets a result.

- ``locate`` (no args): records the receiver's latest fix now (when fresh) and
  returns it; ``failed`` with "no fix" otherwise.
- ``set_interval`` (``min_interval_s`` and/or ``max_interval_s``): sampler
  intervals, live, until the next applied config or restart.
- ``restart`` (no args): reports ``done``, then stops cleanly (exit 0);
  systemd's ``Restart=always`` starts the agent again.
- ``clear_outbox`` (``confirm: true``): drops every unsent fix, counted in the
  outbox's ``dropped`` like cap drops.

The id is written durably before a command runs and its result after, so a
re-delivered command (QoS 1, persistent session) is not run again: its stored
result is sent again instead. A command cut short by a kill is answered
``failed`` at the next start, never run a second time.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from typing import Any

from fleet_edge.config import AgentConfig, ConfigError
from fleet_edge.remote.config_keeper import now_ms
from fleet_edge.remote.runtime import Runtime
from fleet_edge.remote.state import COMMAND_LOG_FILE, CommandEntry, CommandLog, load, save
from fleet_wire import WireError, decode_json, decode_model
from fleet_wire.models import MIN_TIME_MS
from fleet_wire.remote import Command, CommandResult

log = logging.getLogger(__name__)

INTERVAL_ARGS = ("min_interval_s", "max_interval_s")
# After a restart command's result: how long to wait for its PUBACK before
# stopping anyway (the stored result is sent at the next start then).
RESTART_REPORT_WAIT_S = 10.0


def _result(
    cmd_id: str, status: str, message: str, result: dict[str, Any] | None = None
) -> CommandResult:
    return CommandResult.model_validate(
        {
            "id": cmd_id,
            "status": status,
            "message": message[:1000],
            "result": result or {},
            "t": now_ms(),
        }
    )


def args_problem(cmd: Command) -> str | None:
    """Why the command's args are unacceptable, or None."""
    args = cmd.args
    if cmd.kind in ("locate", "restart"):
        return f"{cmd.kind} takes no arguments" if args else None
    if cmd.kind == "clear_outbox":
        if args.get("confirm") is not True:
            return "clear_outbox needs args.confirm = true (it drops every unsent fix)"
        extra = sorted(set(args) - {"confirm"})
        return f"unknown argument {extra[0]!r}" if extra else None
    # set_interval
    extra = sorted(set(args) - set(INTERVAL_ARGS))
    if extra:
        return f"unknown argument {extra[0]!r}; set_interval takes {', '.join(INTERVAL_ARGS)}"
    if not args:
        return f"set_interval needs {' and/or '.join(INTERVAL_ARGS)}"
    for k, v in args.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            return f"{k} must be a number of seconds"
    return None


class CommandRunner:
    def __init__(self, local: AgentConfig, runtime: Runtime, outgoing: asyncio.Event) -> None:
        self._path = local.remote.state_dir / COMMAND_LOG_FILE
        self._runtime = runtime
        self._outgoing = outgoing
        self._lock = asyncio.Lock()
        self.log = load(self._path, CommandLog)
        self._resend: list[CommandResult] = []  # stored results asked for again
        self._restart_after: str | None = None  # id of a restart whose result is going out
        for cid, e in self.log.commands.items():
            if e.result is None:
                log.warning("command %s was interrupted by a restart: not run again", cid)
                self.log.commands[cid] = e.model_copy(
                    update={
                        "result": _result(
                            cid, "failed", "interrupted by an agent restart; not run again"
                        )
                    }
                )

    def start(self) -> None:
        if self.next_result() is not None:
            self._outgoing.set()

    async def handle(self, payload: bytes, content_type: str | None) -> None:
        if not payload:
            return
        try:
            cmd = decode_model(payload, Command, content_type)
        except WireError as e:
            cid = _raw_id(payload, content_type)
            log.warning("command %s refused: %s", cid or "?", e)
            if cid is not None:
                self._resend.append(_result(cid, "rejected", f"schema: {e}"))
                self._outgoing.set()
            return
        async with self._lock:
            entry = self.log.commands.get(cmd.id)
            if entry is not None:
                log.info("command %s delivered again: not run twice", cmd.id)
                if entry.result is not None and entry.sent:
                    self._resend.append(entry.result)
                    self._outgoing.set()
                return
            result = self._refusal(cmd)
            if result is None:
                # The id is durable before the command runs: a kill mid-run never runs it twice.
                if not await self._store(cmd.id, CommandEntry(expires_at=cmd.expires_at)):
                    result = _result(cmd.id, "failed", "cannot record the command id; not run")
                else:
                    result = await self._execute(cmd)
            log.info("command %s (%s): %s %s", cmd.id, cmd.kind, result.status, result.message)
            await self._store(cmd.id, CommandEntry(expires_at=cmd.expires_at, result=result))
            if cmd.kind == "restart" and result.status == "done":
                self._restart_after = cmd.id
                asyncio.get_running_loop().call_later(RESTART_REPORT_WAIT_S, self._runtime.restart)
            self._outgoing.set()

    def _refusal(self, cmd: Command) -> CommandResult | None:
        now = now_ms()
        if now <= MIN_TIME_MS:
            return _result(cmd.id, "rejected", "device clock not set: cannot check the expiry")
        if now > cmd.expires_at:
            ago = (now - cmd.expires_at) / 1000
            return _result(cmd.id, "expired", f"expired {ago:.0f} s before it arrived; not run")
        problem = args_problem(cmd)
        return _result(cmd.id, "rejected", problem) if problem else None

    async def _execute(self, cmd: Command) -> CommandResult:
        rt = self._runtime
        if cmd.kind == "locate":
            fix = rt.locate()
            if fix is None:
                return _result(cmd.id, "failed", "no fix")
            pos = {
                "t": fix.t, "lat": fix.lat, "lon": fix.lon, "spd": fix.speed_kmh,
                "hdg": fix.course_deg, "alt": fix.alt_m, "hdop": fix.hdop, "sat": fix.sats,
            }  # fmt: skip
            return _result(
                cmd.id, "done", "fix recorded", {k: v for k, v in pos.items() if v is not None}
            )
        if cmd.kind == "set_interval":
            try:
                s = rt.set_intervals(dict(cmd.args))
            except ConfigError as e:
                return _result(cmd.id, "rejected", str(e))
            return _result(
                cmd.id, "done", "sampler intervals set",
                {"min_interval_s": s.min_interval_s, "max_interval_s": s.max_interval_s},
            )  # fmt: skip
        if cmd.kind == "clear_outbox":
            try:
                n = await rt.clear_outbox()
            except sqlite3.Error as e:
                return _result(cmd.id, "failed", f"outbox error: {e}")
            log.warning("outbox cleared by command %s: %d unsent fixes dropped", cmd.id, n)
            return _result(cmd.id, "done", f"dropped {n} unsent fixes", {"dropped": n})
        return _result(cmd.id, "done", "restarting")

    async def _store(self, cid: str, entry: CommandEntry) -> bool:
        self.log.commands[cid] = entry
        self.log.prune(now_ms())
        try:
            await asyncio.to_thread(save, self._path, self.log)
        except OSError as e:
            log.error("cannot save %s: %s", self._path, e)
            return False
        return True

    def next_result(self) -> CommandResult | None:
        if self._resend:
            return self._resend[0]
        for e in self.log.commands.values():
            if e.result is not None and not e.sent:
                return e.result
        return None

    async def reported(self, result: CommandResult) -> None:
        """``result`` was PUBACKed."""
        async with self._lock:
            if any(r is result for r in self._resend):
                self._resend = [r for r in self._resend if r is not result]
            else:
                entry = self.log.commands.get(result.id)
                if entry is not None and entry.result is result:
                    await self._store(result.id, entry.model_copy(update={"sent": True}))
        if result.id == self._restart_after:
            self._runtime.restart()


def _raw_id(payload: bytes, content_type: str | None) -> str | None:
    try:
        raw = decode_json(payload, content_type)
    except WireError:
        return None
    cid = raw.get("id") if isinstance(raw, dict) else None
    return cid if isinstance(cid, str) and 1 <= len(cid) <= 64 else None
