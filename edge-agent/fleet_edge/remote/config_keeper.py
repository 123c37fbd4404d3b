"""Signed config documents from ``down/config``: check, persist, apply live, probation, revert.

A document is applied only when all of these hold, in this order (the first
failure is the reason reported as ``rejected``; the config in force stays):

1. it parses as a ConfigDocument (wire schema);
2. it is for this device;
3. ``remote.public_key`` is configured and the Ed25519 signature is valid;
4. its version is above every version applied before (the same version again
   is the broker's retained re-delivery on reconnect: nothing to do);
5. it sets only REMOTE_KEYS and the local config with it passes validation.

Then the new state is written durably (fleet_edge.remote.state), the config is
applied live and ``applied`` is reported. Probation: unless a cloud round trip
(an ack of our telemetry, or the PUBACK of a config report) happens on a
connection made with the new settings within ``remote.probation_s``, the agent
goes back to the last known good config (durably), reconnects with it and
reports ``reverted`` once connected. A config whose probation passed becomes
the last known good one. A restart during probation starts the window again
(a Pi has no clock that survives a power cut to time it across boots).

Reports are sent only on a connection made with the settings in force, so an
``applied`` report never goes out through the broker the config is leaving.
"""

from __future__ import annotations

import asyncio
import logging
import time

from fleet_edge.config import AgentConfig, ConfigError, overlay_remote
from fleet_edge.remote.runtime import Runtime
from fleet_edge.remote.state import CONFIG_STATE_FILE, ConfigState, load, save
from fleet_wire import WireError, decode_json, decode_model
from fleet_wire.models import MAX_JSON_INT, MAX_TIME_MS, MIN_TIME_MS
from fleet_wire.remote import ConfigDocument, ConfigReport, verify

log = logging.getLogger(__name__)


def now_ms() -> int:
    """Wall clock for stamps, kept in the wire's range (a Pi without RTC boots in 1970)."""
    return min(max(int(time.time() * 1000), MIN_TIME_MS), MAX_TIME_MS)


def load_config_state(local: AgentConfig) -> tuple[ConfigState, AgentConfig]:
    """At start-up: the stored state and the config in force (local file + remote overlay)."""
    state = load(local.remote.state_dir / CONFIG_STATE_FILE, ConfigState)
    if state.active is None:
        return state, local
    if local.remote.public_key is None:
        log.warning(
            "remote.public_key is not set: stored remote config version %d not used",
            state.active.version,
        )
        # In memory only: the file keeps it for when a key is configured again.
        return state.model_copy(update={"active": None, "committed": True}), local
    for doc in (state.active, state.good):
        if doc is None:
            break
        try:
            cfg = overlay_remote(local, doc.config)
        except ConfigError as e:
            # The local file changed under it (re-provisioned): fall back.
            log.error("stored remote config version %d does not fit: %s", doc.version, e)
            continue
        if doc is not state.active:
            state = state.model_copy(update={"active": doc, "committed": True})
        return state, cfg
    return state.model_copy(update={"active": None, "committed": True}), local


class ConfigKeeper:
    def __init__(
        self, local: AgentConfig, state: ConfigState, cfg: AgentConfig, runtime: Runtime,
        outgoing: asyncio.Event,
    ) -> None:  # fmt: skip
        self.local = local  # the provisioned file (+ command line): what documents overlay
        self.cfg = cfg  # in force
        self.state = state
        self._runtime = runtime
        self._outgoing = outgoing
        self._path = local.remote.state_dir / CONFIG_STATE_FILE
        self._key = local.remote.public_key
        self._lock = asyncio.Lock()
        self._volatile: list[ConfigReport] = []  # rejections: not worth an SD write
        # Documents rejected this run (hashes): the broker re-delivers the
        # retained one on every reconnect; one report is enough.
        self._rejected: set[int] = set()
        self._probation: asyncio.TimerHandle | None = None
        self._probation_over: asyncio.Queue[int] | None = None

    # --- lifecycle ---------------------------------------------------------------

    def start(self, probation_over: asyncio.Queue[int]) -> None:
        """Called from the downlink task; resumes a probation a restart interrupted."""
        self._probation_over = probation_over
        if not self.state.committed and self.state.active is not None:
            log.info("config version %d still on probation", self.state.active.version)
            self._start_probation(self.state.active.version)
        if self.state.reports:
            self._outgoing.set()

    @property
    def on_probation(self) -> bool:
        return not self.state.committed

    # --- a document arrives --------------------------------------------------------

    async def handle(self, payload: bytes, content_type: str | None) -> None:
        if not payload:
            return  # the cloud cleared the retained document (device disabled)
        try:
            doc = decode_model(payload, ConfigDocument, content_type)
        except WireError as e:
            self._reject(_raw_version(payload, content_type), f"schema: {e}", payload)
            return
        async with self._lock:
            if doc.version == self.state.max_version and doc.sig == self.state.max_sig:
                log.debug("config version %d delivered again: nothing to do", doc.version)
                return
            reason = self._refusal(doc)
            if reason is not None:
                self._reject(doc.version, reason, payload)
                return
            try:
                cfg = overlay_remote(self.local, doc.config)
            except ConfigError as e:
                self._reject(doc.version, f"invalid config: {e}", payload)
                return
            report = ConfigReport(
                version=doc.version, status="applied", active_version=doc.version, t=now_ms()
            )
            state = self.state.model_copy(
                update={
                    "max_version": doc.version,
                    "max_sig": doc.sig,
                    "active": doc,
                    "committed": False,
                    "reports": [*self.state.reports, report],
                }
            )
            try:
                await asyncio.to_thread(save, self._path, state)
            except OSError as e:
                reason = f"cannot save the config state: {e.strerror or e}"
                self._reject(doc.version, reason, None)
                return
            self.state, self.cfg = state, cfg
            self._runtime.apply_config(cfg)
            self._start_probation(doc.version)
            log.info(
                "config version %d applied (%s); probation %g s",
                doc.version,
                ", ".join(f"{k}={v!r}" for k, v in sorted(doc.config.items()))[:500] or "no keys",
                self.local.remote.probation_s,
            )
            self._outgoing.set()

    def _refusal(self, doc: ConfigDocument) -> str | None:
        if doc.device_id != self.local.device_id:
            return f"document is for device {doc.device_id!r}, not {self.local.device_id!r}"
        if self._key is None:
            return "remote config disabled: no remote.public_key configured"
        if not verify(self._key, doc):
            return "bad signature"
        if doc.version < self.state.max_version:
            return f"version {doc.version} is older than version {self.state.max_version}"
        if doc.version == self.state.max_version:
            return f"version {doc.version} was already applied with different content"
        return None

    def _reject(self, version: int | None, reason: str, payload: bytes | None) -> None:
        """Report a rejection once per document (``payload``: None = report every time)."""
        if payload is not None:
            if hash(payload) in self._rejected:
                log.debug("config version %s rejected again: %s", version, reason)
                return
            if len(self._rejected) > 1000:
                self._rejected.clear()
            self._rejected.add(hash(payload))
        log.warning("config version %s rejected: %s", version if version else "?", reason)
        if version is None:
            return  # nothing to report on
        self._volatile.append(
            ConfigReport(
                version=version,
                status="rejected",
                reason=reason[:1000],
                active_version=self.state.active_version,
                t=now_ms(),
            )
        )
        self._outgoing.set()

    # --- probation -----------------------------------------------------------------

    def _start_probation(self, version: int) -> None:
        if self._probation is not None:
            self._probation.cancel()
        queue = self._probation_over
        if queue is None:
            return  # not started (a test driving the keeper directly)
        self._probation = asyncio.get_running_loop().call_later(
            self.local.remote.probation_s, queue.put_nowait, version
        )

    def _on_new_settings(self) -> bool:
        return self._runtime.session_broker() == self.cfg.broker

    async def round_trip(self) -> None:
        """A cloud ack arrived: the config in force passes probation if it was made with it."""
        async with self._lock:
            if self.state.committed or not self._on_new_settings():
                return
            await self._commit(self.state)

    async def _commit(self, state: ConfigState) -> bool:
        """Inside the lock: ``state`` with its active document as the last known good."""
        state = state.model_copy(update={"committed": True, "good": state.active})
        try:
            await asyncio.to_thread(save, self._path, state)
        except OSError as e:
            log.error("cannot save the config state (%s); probation goes on", e)
            return False
        self.state = state
        if self._probation is not None:
            self._probation.cancel()
        log.info("config version %d passed probation: last known good", state.active_version)
        return True

    async def probation_over(self, version: int) -> None:
        async with self._lock:
            if self.state.committed or self.state.active_version != version:
                return
            await self._revert(version)

    async def _revert(self, version: int) -> None:
        good = self.state.good
        cfg = self.local
        if good is not None:
            try:
                cfg = overlay_remote(self.local, good.config)
            except ConfigError as e:
                log.error(
                    "last known good version %d does not fit (%s): local file", good.version, e
                )
                good = None
        reason = (
            f"no cloud round trip within {self.local.remote.probation_s:g} s "
            f"of applying version {version}"
        )
        report = ConfigReport(
            version=version,
            status="reverted",
            reason=reason,
            active_version=good.version if good is not None else 0,
            t=now_ms(),
        )
        kept = [
            r for r in self.state.reports if not (r.status == "applied" and r.version == version)
        ]
        state = self.state.model_copy(
            update={"active": good, "committed": True, "reports": [*kept, report]}
        )
        try:
            await asyncio.to_thread(save, self._path, state)
        except OSError as e:
            # Going back online matters more; a restart repeats the probation.
            log.error("cannot save the reverted config state: %s", e)
        self.state, self.cfg = state, cfg
        self._runtime.apply_config(cfg)
        log.warning(
            "config version %d reverted to version %d: %s", version, report.active_version, reason
        )
        self._outgoing.set()

    # --- reports ---------------------------------------------------------------------

    def next_report(self) -> ConfigReport | None:
        """The oldest report that may go out now (on a connection with the settings in force)."""
        if not self._on_new_settings():
            return None
        if self.state.reports:
            return self.state.reports[0]
        return self._volatile[0] if self._volatile else None

    async def reported(self, report: ConfigReport) -> None:
        """``report`` was PUBACKed on a connection with the settings in force: a round trip."""
        async with self._lock:
            if any(r is report for r in self._volatile):
                self._volatile = [r for r in self._volatile if r is not report]
                state = self.state
            elif any(r is report for r in self.state.reports):
                state = self.state.model_copy(
                    update={"reports": [r for r in self.state.reports if r is not report]}
                )
            else:
                return  # replaced meanwhile (a revert dropped it)
            if not state.committed and self._on_new_settings() and await self._commit(state):
                return
            if state is not self.state:
                try:
                    await asyncio.to_thread(save, self._path, state)
                except OSError as e:
                    # Sent again after a restart only; the cloud takes duplicates.
                    log.error("cannot save the config state: %s", e)
                self.state = state


def _raw_version(payload: bytes, content_type: str | None) -> int | None:
    """The version of a document the schema refused, when it has a usable one."""
    try:
        raw = decode_json(payload, content_type)
    except WireError:
        return None
    v = raw.get("version") if isinstance(raw, dict) else None
    return v if type(v) is int and 1 <= v <= MAX_JSON_INT else None
