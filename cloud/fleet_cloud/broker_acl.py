"""Who may do what on the broker: the dynamic-security roles, as data.

One place states the rules (docs/security.md has them as a table):
- a device publishes only its own ``up/<kind>`` topics and subscribes only to
  its own ``down/<kind>`` topics, each by its literal name (no wildcards, no
  other device, no ``$SYS``, no ``$CONTROL``);
- ``fleet-ingest`` takes device traffic through the shared subscription and
  publishes end-to-end acks;
- ``fleet-control`` publishes config and commands to devices and clears
  retained status documents;
- the admin account (dynsec's own ``admin`` role) may also clear a revoked
  device's retained messages.

Mosquitto 2.0's plugin has no ``%u``/``%c`` substitution in ACLs, so every
device gets its own role ``device-<id>`` with literal topics; the client is
also bound to client id = device id, so a device cannot connect under
another client id (``#``, ``a/b``...) or take over another device's session.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fleet_wire.topics import (
    INGEST_SUBSCRIPTION,
    TOPIC_ROOT,
    Down,
    Up,
    down_topic,
    is_valid_device_id,
    up_topic,
)

AclType = Literal[
    "publishClientSend",
    "publishClientReceive",
    "subscribeLiteral",
    "subscribePattern",
    "unsubscribeLiteral",
    "unsubscribePattern",
]


@dataclass(frozen=True, slots=True)
class Acl:
    acltype: AclType
    topic: str
    allow: bool = True

    def as_json(self) -> dict[str, object]:
        return {"acltype": self.acltype, "topic": self.topic, "allow": self.allow}


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    acls: tuple[Acl, ...]


INGEST_ROLE = Role(
    "fleet-ingest",
    (
        Acl("subscribePattern", INGEST_SUBSCRIPTION),
        Acl("publishClientSend", f"{TOPIC_ROOT}/+/down/{Down.ACK.value}"),
    ),
)

CONTROL_ROLE = Role(
    "fleet-control",
    (
        Acl("publishClientSend", f"{TOPIC_ROOT}/+/down/{Down.CONFIG.value}"),
        Acl("publishClientSend", f"{TOPIC_ROOT}/+/down/{Down.CMD.value}"),
        # Only to clear a retained status (an empty retained payload); the
        # broker cannot restrict the payload, the control service does.
        Acl("publishClientSend", f"{TOPIC_ROOT}/+/up/{Up.STATUS.value}"),
    ),
)

# The retained topics of one device: what revocation clears.
RETAINED_KINDS: tuple[str, ...] = (
    f"up/{Up.STATUS.value}",
    f"down/{Down.CONFIG.value}",
    f"down/{Down.CMD.value}",
)

# Added to the admin account, so BrokerAdmin can clear a revoked device's
# retained messages itself (dynsec's admin role can only talk to $CONTROL).
RETAINED_CLEAR_ROLE = Role(
    "fleet-retained-clear",
    tuple(Acl("publishClientSend", f"{TOPIC_ROOT}/+/{kind}") for kind in RETAINED_KINDS),
)


class BadDeviceId(ValueError):
    """A device id that cannot be a broker identity."""


def checked_device_id(device_id: str) -> str:
    # The wire contract's pattern has no '/', '+', '#' or '$', so a device's
    # username, client id and topic level can never be a wildcard or a path.
    if not is_valid_device_id(device_id):
        raise BadDeviceId(
            f"invalid device id {device_id!r}: must match ^[a-z0-9][a-z0-9-]{{2,63}}$"
        )
    return device_id


def device_role(device_id: str) -> Role:
    """Publish its own up/<kind>, subscribe to its own down/<kind>, nothing else."""
    checked_device_id(device_id)
    return Role(
        f"device-{device_id}",
        tuple(Acl("publishClientSend", up_topic(device_id, k)) for k in Up)
        + tuple(Acl("subscribeLiteral", down_topic(device_id, k)) for k in Down),
    )


def device_retained_topics(device_id: str) -> list[str]:
    checked_device_id(device_id)
    return [f"{TOPIC_ROOT}/{device_id}/{kind}" for kind in RETAINED_KINDS]
