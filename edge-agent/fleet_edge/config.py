"""The agent's configuration: one TOML file, overridable from the command line.

Every tunable lives here (not as a constant in the module that uses it) so that
remote config pushed on ``down/config`` can later change it through the same
validation. Unknown keys are refused: a typo in a config file must be an error,
not a silently ignored setting.

A minimal file (every other key has a default, listed below)::

    device_id = "truck-042"

    [broker]
    host = "mqtt.example.net"
    password = "..."

    [gps]
    port = "/dev/serial/by-id/usb-u-blox_GNSS_receiver-if00"
    baud = 9600

    [outbox]
    path = "/var/lib/fleet-agent/outbox.db"

    [obd]              # optional: an ELM327 adapter (docs/edge.md)
    enabled = true
    port = "/dev/serial/by-id/usb-1a86_USB_Serial-if00-port0"

    [remote]           # optional: accept signed config from the cloud (docs/remote-config.md)
    public_key = "base64 Ed25519 key from provisioning"
"""

from __future__ import annotations

import base64
import binascii
import tomllib
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fleet_wire import is_valid_device_id
from fleet_wire.models import MAX_FIXES_PER_BATCH
from fleet_wire.remote import REMOTE_KEYS
from fleet_wire.topics import DEVICE_ID_PATTERN

if TYPE_CHECKING:
    import aiomqtt

PositiveFloat = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]
BatchSize = Annotated[int, Field(ge=1, le=MAX_FIXES_PER_BATCH)]
LogLevel = Literal["debug", "info", "warning", "error"]


class ConfigError(ValueError):
    """A configuration that cannot be used; the message is one line for the operator."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BrokerConfig(_Section):
    # The MQTT client id and username are always the device_id (wire contract),
    # so they are not settable here.
    host: str = "localhost"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    password: str | None = None
    # TLS to the broker's TLS listener (docs/security.md), verifying it against
    # ca_file (the project CA from provisioning; None: the system's CAs). A
    # client certificate (cert_file + key_file) is optional, for the listener
    # that requires one.
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    # Mosquitto refuses keepalives above its max_keepalive (300 s).
    keepalive_s: Annotated[int, Field(ge=5, le=300)] = 60
    # How long the broker keeps our session (subscription + queued acks) while
    # we are offline; acks published meanwhile are delivered on reconnect.
    session_expiry_s: Annotated[int, Field(ge=0, le=2**32 - 1)] = 7 * 24 * 3600
    reconnect_min_s: PositiveFloat = 1.0
    reconnect_max_s: PositiveFloat = 60.0

    @model_validator(mode="after")
    def _backoff_order(self) -> Self:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        return self

    @model_validator(mode="after")
    def _tls_files(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (the client certificate)")
        if not self.tls and (self.ca_file or self.cert_file):
            raise ValueError("ca_file/cert_file/key_file need tls = true")
        return self

    def tls_params(self) -> aiomqtt.TLSParameters | None:
        """What aiomqtt needs for this broker's TLS, or None for plain MQTT."""
        if not self.tls:
            return None
        import aiomqtt

        return aiomqtt.TLSParameters(
            ca_certs=str(self.ca_file) if self.ca_file else None,
            certfile=str(self.cert_file) if self.cert_file else None,
            keyfile=str(self.key_file) if self.key_file else None,
        )


class GpsConfig(_Section):
    # serial: read NMEA from ``port`` ourselves; gpsd: take fixes from a gpsd
    # daemon at gpsd_host:gpsd_port (when the receiver is shared or not NMEA).
    source: Literal["serial", "gpsd"] = "serial"
    port: Path = Path("/dev/ttyACM0")
    baud: PositiveInt = 9600
    gpsd_host: str = "127.0.0.1"
    gpsd_port: Annotated[int, Field(ge=1, le=65535)] = 2947
    reopen_max_s: PositiveFloat = 30.0
    # A receiver talks every second even without a fix; this long a silence
    # means the link is dead even if the port still looks open.
    silence_timeout_s: PositiveFloat = 10.0
    # Receiver dates before this are not trusted (GPS week rollover, a receiver
    # without almanac): such epochs become no-fix readings. None: the build's own date.
    not_before: date | None = None


class ObdConfig(_Section):
    enabled: bool = False
    port: Path = Path("/dev/ttyUSB0")
    baud: PositiveInt = 38400
    # Names from fleet_edge.obd.pids.PIDS; unsupported ones are skipped.
    pids: tuple[str, ...] = (
        "rpm",
        "speed",
        "coolant_temp",
        "engine_load",
        "throttle",
        "fuel_level",
        "intake_temp",
        "maf",
        "run_time",
        "module_voltage",
        "distance_since_clear",
        "odometer",
    )
    pids_per_s: PositiveFloat = 10.0
    timeout_s: PositiveFloat = 2.0  # per request; clones are slow
    search_timeout_s: PositiveFloat = 15.0  # first request: SEARCHING... through protocols
    dtc_interval_s: PositiveFloat = 60.0
    reopen_max_s: PositiveFloat = 30.0
    # Engine values older than this are not attached to a fix.
    max_age_s: PositiveFloat = 10.0
    # Engine running (ignition on) when RPM > 0 or the battery is charging.
    charging_v: PositiveFloat = 13.2
    # No ECU answer for this long: ignition off.
    ecu_silent_s: PositiveFloat = 5.0

    @field_validator("pids")
    @classmethod
    def _known_pids(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from fleet_edge.obd.pids import BY_NAME

        unknown = [p for p in v if p not in BY_NAME]
        if unknown:
            raise ValueError(f"unknown PID {unknown[0]!r}; known: {', '.join(BY_NAME)}")
        return v


class OutboxConfig(_Section):
    path: Path = Path("/var/lib/fleet-agent/outbox.db")
    max_rows: PositiveInt = 500_000
    # Counted on stored fix bodies; the file itself is larger (b-tree pages).
    max_bytes: PositiveInt = 64 * 1024 * 1024
    commit_interval_s: PositiveFloat = 1.0
    commit_max_rows: PositiveInt = 100


class SamplerConfig(_Section):
    min_interval_s: Annotated[float, Field(ge=0)] = 1.0
    max_interval_s: PositiveFloat = 60.0  # heartbeat while parked
    min_distance_m: Annotated[float, Field(ge=0)] = 50.0
    heading_change_deg: Annotated[float, Field(gt=0, le=180)] = 20.0
    # Below this speed course over ground is receiver noise, not a turn.
    heading_min_speed_kmh: Annotated[float, Field(ge=0)] = 5.0
    # Events recorded at once (whatever min_interval_s says).
    on_ignition: bool = True  # ignition on / off (needs OBD)
    on_motion: bool = True  # start / stop moving
    # Moving from motion_start_kmh up; stopped once below motion_stop_kmh for
    # motion_stop_s (a red light is a stop too; a GPS speed jitter is not).
    motion_start_kmh: PositiveFloat = 8.0
    motion_stop_kmh: Annotated[float, Field(ge=0)] = 3.0
    motion_stop_s: Annotated[float, Field(ge=0)] = 10.0

    @model_validator(mode="after")
    def _interval_order(self) -> Self:
        if self.max_interval_s < self.min_interval_s:
            raise ValueError("max_interval_s must be >= min_interval_s")
        if self.motion_stop_kmh >= self.motion_start_kmh:
            raise ValueError("motion_stop_kmh must be < motion_start_kmh")
        return self


class PublisherConfig(_Section):
    live_batch_max: BatchSize = 50
    # 100 fixes (~1.9 KB compressed) keep a live fix's wait behind one backlog
    # batch short on a slow uplink; 200 saved 3% of bytes but cost live p99.
    backlog_batch: BatchSize = 100
    # Backlog (and re-sent) fixes per second, per device. 2000/s drains a day
    # at 1 Hz in about 45 s and is about 60% of a 0.5 Mbit/s uplink at ~19
    # B/fix batched, so live fixes never queue behind the drain for long
    # (docs/delivery.md, bench/drain). The cloud is protected by the ack
    # window too: at most max_inflight_batches wait for an ack per device.
    drain_rate: PositiveFloat = 2000.0
    ack_timeout_s: PositiveFloat = 30.0
    # 16 x 100 fixes in flight sustain 2000 fixes/s up to ~0.75 s ack round trip.
    max_inflight_batches: Annotated[int, Field(ge=1, le=100)] = 16
    status_interval_s: PositiveFloat = 60.0


class RemoteConfig(_Section):
    # The cloud's config-signing key (base64 raw Ed25519, 32 bytes), given at
    # provisioning. None: every down/config document is refused.
    public_key: str | None = None
    # Applied remote config, last known good one and recent command ids
    # (fleet_edge.remote.state); must survive reboots, like the outbox.
    state_dir: Path = Path("/var/lib/fleet-agent")
    # After applying a config the agent must reach the cloud within this long,
    # or it reverts to the last known good config.
    probation_s: PositiveFloat = 120.0

    @field_validator("public_key")
    @classmethod
    def _ed25519_key(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            raw = base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("must be base64") from None
        if len(raw) != 32:
            raise ValueError(f"must be a 32-byte Ed25519 public key, got {len(raw)} bytes")
        return v


class AgentConfig(_Section):
    device_id: str
    log_level: LogLevel = "info"
    broker: BrokerConfig = BrokerConfig()
    gps: GpsConfig = GpsConfig()
    obd: ObdConfig = ObdConfig()
    outbox: OutboxConfig = OutboxConfig()
    sampler: SamplerConfig = SamplerConfig()
    publisher: PublisherConfig = PublisherConfig()
    remote: RemoteConfig = RemoteConfig()

    @field_validator("device_id")
    @classmethod
    def _device_id(cls, v: str) -> str:
        if not is_valid_device_id(v):
            raise ValueError(f"must match {DEVICE_ID_PATTERN}")
        return v


def _set_dotted(doc: dict[str, Any], dotted: str, value: Any) -> None:
    *sections, key = dotted.split(".")
    node = doc
    for name in sections:
        child = node.setdefault(name, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config error: {name} must be a table")
        node = child
    node[key] = value


def _one_line(e: ValidationError) -> str:
    errs = e.errors(include_url=False)
    first = errs[0]
    where = ".".join(str(p) for p in first["loc"]) or "config"
    more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
    return f"{where}: {first['msg']}{more}"


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> AgentConfig:
    """Read the TOML file (if any), apply dotted-key overrides, validate.

    Raises ConfigError with a one-line message on any problem.
    """
    doc: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"config error: {path}: no such file") from None
        except OSError as e:
            raise ConfigError(f"config error: {path}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config error: {path}: {e}") from None
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(doc, dotted, value)
    try:
        return AgentConfig.model_validate(doc)
    except ValidationError as e:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"config error: {where}{_one_line(e)}") from None


def overlay_remote(base: AgentConfig, flat: Mapping[str, Any]) -> AgentConfig:
    """``base`` with a remote document's dotted keys set, validated by the same model.

    Only keys in REMOTE_KEYS may appear (credentials, ports, paths and the
    remote section itself stay local). Raises ConfigError with a one-line
    reason naming the first problem.
    """
    foreign = sorted(k for k in flat if k not in REMOTE_KEYS)
    if foreign:
        raise ConfigError(f"{foreign[0]!r} may not be set remotely")
    doc = base.model_dump()
    for dotted, value in flat.items():
        _set_dotted(doc, dotted, value)
    try:
        return AgentConfig.model_validate(doc)
    except ValidationError as e:
        raise ConfigError(_one_line(e)) from None


def parse_host_port(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``[v6addr]:PORT``) -> (host, port); raises ConfigError."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"config error: --broker {value!r}: expected HOST:PORT")
    return host, int(port)
