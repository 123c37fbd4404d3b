"""MQTT topic names of wire contract v1.

Device -> cloud: ``fleet/v1/{device_id}/up/{kind}``
Cloud -> device: ``fleet/v1/{device_id}/down/{kind}``

Identity is always taken from the topic (which the broker ACL ties to the
client's credentials), never from a payload.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

TOPIC_ROOT = "fleet/v1"
DEVICE_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{2,63}$"
_DEVICE_ID_RE = re.compile(DEVICE_ID_PATTERN)


class Up(StrEnum):
    """What a device publishes."""

    TELEMETRY = "telemetry"
    EVENTS = "events"
    STATUS = "status"  # retained; also the Last Will (online: false)
    CONFIG = "config"  # reported config
    CMD = "cmd"  # command results


class Down(StrEnum):
    """What the cloud publishes to one device."""

    ACK = "ack"
    CONFIG = "config"  # retained, versioned
    CMD = "cmd"  # carries an expiry


# Ingest workers split the device traffic between them through an MQTT v5
# shared subscription: the broker hands each message to one member of the group.
INGEST_SHARE_GROUP = "ingest"
INGEST_SUBSCRIPTION = f"$share/{INGEST_SHARE_GROUP}/{TOPIC_ROOT}/+/up/#"


class TopicError(ValueError):
    """A topic that is not a well-formed v1 device topic."""


def is_valid_device_id(device_id: str) -> bool:
    return _DEVICE_ID_RE.fullmatch(device_id) is not None


def _checked(device_id: str) -> str:
    if not is_valid_device_id(device_id):
        raise TopicError(f"invalid device_id {device_id!r}: must match {DEVICE_ID_PATTERN}")
    return device_id


def up_topic(device_id: str, kind: Up) -> str:
    return f"{TOPIC_ROOT}/{_checked(device_id)}/up/{kind.value}"


def down_topic(device_id: str, kind: Down) -> str:
    return f"{TOPIC_ROOT}/{_checked(device_id)}/down/{kind.value}"


@dataclass(frozen=True, slots=True)
class UpTopic:
    device_id: str
    kind: Up


def parse_up_topic(topic: str) -> UpTopic:
    """Split a device -> cloud topic; raise TopicError on anything else."""
    parts = topic.split("/")
    if len(parts) != 5 or f"{parts[0]}/{parts[1]}" != TOPIC_ROOT or parts[3] != "up":
        raise TopicError(f"not a {TOPIC_ROOT} up topic: {topic[:200]!r}")
    try:
        kind = Up(parts[4])
    except ValueError:
        raise TopicError(f"unknown up kind {parts[4][:50]!r}") from None
    return UpTopic(_checked(parts[2]), kind)
