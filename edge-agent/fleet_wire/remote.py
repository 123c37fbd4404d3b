"""Remote configuration and commands of wire contract v1.

``down/config`` (retained, QoS 1) carries a :class:`ConfigDocument`: the
device's desired configuration *overlay* (only the keys the cloud may change,
see :data:`REMOTE_KEYS`), a version that only ever grows, and an Ed25519
signature by the cloud's config key. The signature covers
:func:`signed_bytes`, which includes the device id, so a document captured for
one device cannot be replayed to another.

``up/config`` carries a :class:`ConfigReport`: what the agent did with a
version (applied, rejected with a reason, reverted after the probation window).

``down/cmd`` (QoS 1, not retained) carries a :class:`Command` with an expiry;
``up/cmd`` carries its :class:`CommandResult`. Commands are not signed: only
the cloud's control account may publish on ``down/`` (broker ACL), and none of
them can change what the agent trusts.

The crypto library is imported only when a signature is made or checked, so an
agent that never receives a config does not pay its memory.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, Strict

from fleet_wire.models import MAX_JSON_INT, SCHEMA_VERSION, TimeMs

# Dotted agent-config keys the cloud may set. Everything else (device id,
# credentials, file paths, serial ports) is local to the unit and set at
# provisioning; a document touching another key is rejected as a whole.
REMOTE_KEYS: Final = frozenset(
    {
        "broker.host",
        "broker.port",
        "broker.keepalive_s",
        "sampler.min_interval_s",
        "sampler.max_interval_s",
        "sampler.min_distance_m",
        "sampler.heading_change_deg",
        "sampler.heading_min_speed_kmh",
        "sampler.on_ignition",
        "sampler.on_motion",
        "sampler.motion_start_kmh",
        "sampler.motion_stop_kmh",
        "sampler.motion_stop_s",
        "obd.pids",
        "obd.pids_per_s",
        "obd.dtc_interval_s",
        "publisher.live_batch_max",
        "publisher.backlog_batch",
        "publisher.drain_rate",
        "publisher.status_interval_s",
        "log_level",
    }
)

Version = Annotated[int, Strict(), Field(ge=1, le=MAX_JSON_INT)]
CommandKind = Literal["locate", "set_interval", "restart", "clear_outbox"]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigDocument(_Wire):
    v: Literal[1] = SCHEMA_VERSION
    device_id: str
    version: Version
    issued_at: TimeMs
    # Flat mapping of dotted keys (REMOTE_KEYS) to values; the agent validates
    # the values through its own config model before applying anything.
    config: dict[str, Any]
    sig: str  # base64 (standard alphabet) Ed25519 signature of signed_bytes()


class ConfigReport(_Wire):
    v: Literal[1] = SCHEMA_VERSION
    version: Version  # the version this report is about
    status: Literal["applied", "rejected", "reverted"]
    reason: str | None = None  # why rejected / reverted; None when applied
    # The version in force after this report (0: the provisioned file only).
    active_version: Annotated[int, Strict(), Field(ge=0, le=MAX_JSON_INT)]
    t: TimeMs


class Command(_Wire):
    v: Literal[1] = SCHEMA_VERSION
    id: Annotated[str, Field(min_length=1, max_length=64)]
    kind: CommandKind
    args: dict[str, Any] = {}
    expires_at: TimeMs


class CommandResult(_Wire):
    v: Literal[1] = SCHEMA_VERSION
    id: Annotated[str, Field(min_length=1, max_length=64)]
    status: Literal["done", "rejected", "expired", "failed"]
    message: Annotated[str, Field(max_length=1000)] = ""
    result: dict[str, Any] = {}
    t: TimeMs


def signed_bytes(device_id: str, version: int, issued_at: int, config: dict[str, Any]) -> bytes:
    """The exact bytes the signature covers: canonical JSON (sorted keys, compact)."""
    return orjson.dumps(
        {"device_id": device_id, "version": version, "issued_at": issued_at, "config": config},
        option=orjson.OPT_SORT_KEYS,
    )


def sign(
    private_key_raw: bytes, device_id: str, version: int, issued_at: int, config: dict[str, Any]
) -> str:
    """Base64 Ed25519 signature (cloud side). ``private_key_raw``: 32-byte seed."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.from_private_bytes(private_key_raw)
    return base64.b64encode(key.sign(signed_bytes(device_id, version, issued_at, config))).decode()


def verify(public_key_b64: str, doc: ConfigDocument) -> bool:
    """True when ``doc.sig`` is the cloud key's signature of this document."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64, validate=True))
        sig = base64.b64decode(doc.sig, validate=True)
        key.verify(sig, signed_bytes(doc.device_id, doc.version, doc.issued_at, doc.config))
    except (InvalidSignature, ValueError):
        return False
    return True


def public_key_b64(private_key_raw: bytes) -> str:
    """The base64 raw public key the agent is given at provisioning."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    pub = Ed25519PrivateKey.from_private_bytes(private_key_raw).public_key()
    return base64.b64encode(pub.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
