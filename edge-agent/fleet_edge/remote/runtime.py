"""What remote config and commands act on: the running agent, behind one small interface.

``Runtime`` is what fleet_edge.remote needs; ``AgentRuntime`` implements it on
fleet_edge.agent.Agent by reaching into its components, so the agent itself
only wires the downlink in.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from fleet_edge.config import AgentConfig, BrokerConfig, ConfigError, SamplerConfig
from fleet_edge.gps.fix import GpsFix
from fleet_edge.logs import set_log_level
from fleet_wire import Up

if TYPE_CHECKING:
    from fleet_edge.agent import Agent

log = logging.getLogger(__name__)

# ``locate`` answers with the receiver's latest fix only when it is this fresh
# (the receiver talks at 1 Hz or faster; older means it has lost the sky).
LOCATE_MAX_AGE_S = 5.0


class Runtime(Protocol):
    def session_broker(self) -> BrokerConfig | None: ...

    async def publish_up(self, kind: Up, payload: bytes) -> bool: ...

    def apply_config(self, cfg: AgentConfig) -> None: ...

    def locate(self) -> GpsFix | None: ...

    def set_intervals(self, changes: dict[str, Any]) -> SamplerConfig: ...

    async def clear_outbox(self) -> int: ...

    def restart(self) -> None: ...


class AgentRuntime:
    def __init__(self, agent: Agent) -> None:
        self._agent = agent

    def session_broker(self) -> BrokerConfig | None:
        return self._agent.publisher.session_broker

    async def publish_up(self, kind: Up, payload: bytes) -> bool:
        return await self._agent.publisher.publish_up(kind, payload)

    def apply_config(self, cfg: AgentConfig) -> None:
        """Everything REMOTE_KEYS can change, live (no restart)."""
        a = self._agent
        a.cfg = cfg
        a.sampler.reconfigure(cfg.sampler)
        if a.obd is not None:
            a.obd.reconfigure(cfg.obd)
        a.publisher.reconfigure(cfg)  # batching, drain rate; a new broker reconnects
        a.health.interval_s = cfg.publisher.status_interval_s
        set_log_level(cfg.log_level)

    def locate(self) -> GpsFix | None:
        """Record the latest fix now (unless the sampler already did); None: no fresh fix."""
        a = self._agent
        latest = a.latest_fix
        if latest is None or time.monotonic() - latest.received > LOCATE_MAX_AGE_S:
            return None
        if not latest.recorded:
            a.record(latest.fix)
            latest.recorded = True
        return latest.fix

    def set_intervals(self, changes: dict[str, Any]) -> SamplerConfig:
        """New sampler intervals, validated like the config file; raises ConfigError."""
        a = self._agent
        try:
            sampler = SamplerConfig.model_validate({**a.cfg.sampler.model_dump(), **changes})
        except ValueError as e:
            raise ConfigError(_first_error(e)) from None
        a.cfg = a.cfg.model_copy(update={"sampler": sampler})
        a.sampler.reconfigure(sampler)
        return sampler

    async def clear_outbox(self) -> int:
        return await self._agent.outbox.drop_all()

    def restart(self) -> None:
        log.warning("restart requested by the cloud: stopping (systemd starts the agent again)")
        self._agent.stop_requested()


def _first_error(e: ValueError) -> str:
    from pydantic import ValidationError

    if isinstance(e, ValidationError):
        err = e.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"]) or "sampler"
        return f"{where}: {err['msg']}"
    return str(e)
