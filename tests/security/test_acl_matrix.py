"""The broker's ACL, case by case against the running broker: actor x topic family x
publish/subscribe, each expectation derived from the rules as the issue states them
(not from the broker's configuration), each answer the broker's own.

- a device publishes only its own ``up/<kind>`` and subscribes only to its own
  ``down/<kind>``, by literal name: no wildcards, no other device, no $SYS, no $CONTROL;
- ``fleet-ingest`` takes device ``up/`` traffic through the ingest share group and
  publishes ``down/ack``; ``fleet-control`` publishes ``down/config``, ``down/cmd`` and
  (to clear it) ``up/status``; neither may do anything else.

A denied SUBSCRIBE shows as SUBACK reason code 135. A denied PUBLISH shows as PUBACK
135 *and* the message never reaches an observer subscribed to ``fleet/v1/#``: after it,
the same client publishes an allowed sentinel, and once the sentinel has arrived the
denied message would have arrived before it (one publisher, PUBACKed in order).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from fleet_cloud.broker_admin import BrokerAdmin
from fleet_wire.topics import Down, Up
from tests.harness import Broker
from tests.security.mqtt_probe import NOT_AUTHORIZED, Session, connect

DEV_A = "acl-dev-a"
DEV_B = "acl-dev-b"
INGEST = "fleet-ingest"
CONTROL = "fleet-control"
UP_KINDS = [k.value for k in Up]
DOWN_KINDS = [k.value for k in Down]


# -- the rules, as stated -----------------------------------------------------


def device_may(device: str, action: str, topic: str) -> bool:
    parts = topic.split("/")
    own = len(parts) == 5 and parts[:3] == ["fleet", "v1", device]
    if action == "publish":
        return own and parts[3] == "up" and parts[4] in UP_KINDS
    return own and parts[3] == "down" and parts[4] in DOWN_KINDS


def ingest_may(action: str, topic: str) -> bool:
    if action == "publish":
        return mqtt.topic_matches_sub("fleet/v1/+/down/ack", topic)
    share = "$share/ingest/"
    return topic.startswith(share) and mqtt.topic_matches_sub(
        "fleet/v1/+/up/#", topic[len(share) :]
    )


def control_may(action: str, topic: str) -> bool:
    if action == "subscribe":
        return False
    return any(
        mqtt.topic_matches_sub(f, topic)
        for f in ("fleet/v1/+/down/config", "fleet/v1/+/down/cmd", "fleet/v1/+/up/status")
    )


def expected(actor: str, action: str, topic: str) -> bool:
    if actor == INGEST:
        return ingest_may(action, topic)
    if actor == CONTROL:
        return control_may(action, topic)
    return device_may(actor, action, topic)


# -- the topic families ---------------------------------------------------------------

DEVICE_TOPICS = [
    f"fleet/v1/{owner}/{direction}/{kind}"
    for owner in (DEV_A, DEV_B)
    for direction, kinds in (("up", [*UP_KINDS, "bogus"]), ("down", [*DOWN_KINDS, "bogus"]))
    for kind in kinds
]
WILDCARD_FILTERS = [
    f"fleet/v1/{DEV_A}/down/#",
    f"fleet/v1/{DEV_A}/down/+",
    f"fleet/v1/{DEV_A}/up/#",
    f"fleet/v1/{DEV_A}/#",
    f"+/v1/{DEV_A}/down/ack",
    "fleet/v1/+/down/ack",
    "fleet/v1/+/up/#",
    "fleet/v1/#",
    "#",
    "$share/ingest/fleet/v1/+/up/#",
    f"$share/ingest/fleet/v1/{DEV_A}/up/telemetry",
    "$share/other/fleet/v1/+/up/#",
    f"$share/g/fleet/v1/{DEV_A}/down/ack",
]
SYSTEM_SUBSCRIBE = [
    "$SYS/#",
    "$SYS/broker/version",
    "$CONTROL/dynamic-security/v1",
    "$CONTROL/dynamic-security/v1/response",
    "$CONTROL/#",
]
OTHER_PUBLISH = [f"fleet/v2/{DEV_A}/up/telemetry", "elsewhere/topic"]


@dataclass(frozen=True)
class Case:
    actor: str
    action: str
    topic: str

    @property
    def allowed(self) -> bool:
        return expected(self.actor, self.action, self.topic)

    def __str__(self) -> str:
        verdict = "allow" if self.allowed else "deny"
        return f"{self.actor}:{self.action}:{self.topic}:{verdict}"


def cases() -> list[Case]:
    out: list[Case] = []
    for actor in (DEV_A, INGEST, CONTROL):
        for t in DEVICE_TOPICS:
            out += [Case(actor, "publish", t), Case(actor, "subscribe", t)]
        out += [Case(actor, "subscribe", t) for t in WILDCARD_FILTERS + SYSTEM_SUBSCRIBE]
        out += [Case(actor, "publish", t) for t in OTHER_PUBLISH]
        out.append(Case(actor, "publish", "$CONTROL/dynamic-security/v1"))
    return out


CASES = cases()
# What each actor publishes right after a case, to prove the case's message is not coming.
SENTINEL = {
    DEV_A: f"fleet/v1/{DEV_A}/up/telemetry",
    INGEST: f"fleet/v1/{DEV_A}/down/ack",
    CONTROL: f"fleet/v1/{DEV_A}/down/cmd",
}


def test_the_matrix_covers_both_verdicts_for_every_actor() -> None:
    for actor in SENTINEL:
        for action in ("publish", "subscribe"):
            verdicts = {c.allowed for c in CASES if c.actor == actor and c.action == action}
            if actor == CONTROL and action == "subscribe":
                assert verdicts == {False}
            else:
                assert verdicts == {True, False}, (actor, action)
    assert all(expected(a, "publish", t) for a, t in SENTINEL.items())


@pytest.fixture(scope="module")
def sessions(sec_broker: Broker) -> Iterator[dict[str, Session]]:
    b = sec_broker
    out = {
        DEV_A: connect(b.host, b.port, DEV_A, b.device_password(DEV_A), DEV_A),
        INGEST: connect(
            b.host, b.port, INGEST, b.secret(INGEST), f"acl-ingest-{uuid.uuid4().hex[:6]}"
        ),
        CONTROL: connect(b.host, b.port, CONTROL, b.secret(CONTROL)),
        "observer": connect(b.host, b.port, *b.observer),
    }
    b.device_password(DEV_B)  # exists, so "other device" is a real account
    try:
        assert all(s.ok for s in out.values()), {k: s.connack for k, s in out.items()}
        assert out["observer"].subscribe("fleet/v1/#") == 1
        yield out
    finally:
        for s in out.values():
            s.close()


@pytest.mark.parametrize("case", CASES, ids=str)
def test_acl(case: Case, sessions: dict[str, Session]) -> None:
    actor = sessions[case.actor]
    if case.action == "subscribe":
        code = actor.subscribe(case.topic, qos=1)
        if case.allowed:
            assert code in (0, 1), code  # granted QoS
            actor.client.unsubscribe(case.topic)
        else:
            assert code == NOT_AUTHORIZED, code
        return
    observer = sessions["observer"]
    nonce = f"acl-{uuid.uuid4().hex}".encode()
    code = actor.publish(case.topic, nonce)
    assert code == (0 if case.allowed else NOT_AUTHORIZED), code
    if not case.topic.startswith("fleet/v1/"):
        return  # outside what the observer may see; the PUBACK is the broker's answer
    if case.allowed:
        got = observer.wait_for(nonce, f"the allowed publish on {case.topic}")
        assert got.topic == case.topic
    else:
        sentinel = f"sentinel-{uuid.uuid4().hex}".encode()
        assert actor.publish(SENTINEL[case.actor], sentinel) == 0
        observer.wait_for(sentinel, "the sentinel")
        assert nonce not in observer.payloads(), f"denied publish on {case.topic} was delivered"


def test_a_device_cannot_administer_the_broker(sec_broker: Broker) -> None:
    """A dynsec command from a device is refused and has no effect."""
    b = sec_broker
    dev = connect(b.host, b.port, DEV_B, b.device_password(DEV_B), DEV_B)
    try:
        cmd = b'{"commands":[{"command":"createClient","username":"evil-1","password":"x"}]}'
        assert dev.publish("$CONTROL/dynamic-security/v1", cmd) == NOT_AUTHORIZED
    finally:
        dev.close()

    async def lookup(admin: BrokerAdmin) -> list[dict[str, Any]]:
        return await admin.execute({"command": "getClient", "username": "evil-1"})

    (answer,) = b.admin(lookup)
    assert answer.get("error") == "Client not found"
