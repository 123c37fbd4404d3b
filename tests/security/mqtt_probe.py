"""A blocking MQTT v5 client for asking the broker yes/no questions: does this
login get a CONNACK success, this SUBSCRIBE a grant, this PUBLISH a PUBACK success?

Reason codes are the broker's own answers (MQTT v5): 0 success, 135 (0x87)
not authorized, 152 administrative action (a kick), ...
"""

from __future__ import annotations

import ssl
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

NOT_AUTHORIZED = 135
ADMINISTRATIVE_ACTION = 152
NO_MATCHING_SUBSCRIBERS = 16  # a PUBACK success: accepted, nobody subscribed
WAIT_S = 10.0  # an upper bound for a broker on localhost to answer, not a measurement


def accepted(code: int) -> bool:
    """A success reason code (below 0x80), e.g. 0 or 16 for a PUBACK, the QoS for a SUBACK."""
    return code < 0x80


def _code(rc: ReasonCode | int) -> int:
    return rc.value if isinstance(rc, ReasonCode) else int(rc)


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool


@dataclass
class Session:
    client: mqtt.Client
    connack: int | None = None
    disconnect_code: int | None = None
    received: list[Received] = field(default_factory=list)
    _connected: threading.Event = field(default_factory=threading.Event)
    _disconnected: threading.Event = field(default_factory=threading.Event)
    _acks: dict[int, tuple[threading.Event, list[int]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _arrived: threading.Condition = field(default_factory=threading.Condition)

    @property
    def ok(self) -> bool:
        return self.connack == 0

    def _pending(self, mid: int) -> tuple[threading.Event, list[int]]:
        with self._lock:
            return self._acks.setdefault(mid, (threading.Event(), []))

    def _wait_ack(self, mid: int, what: str) -> list[int]:
        done, codes = self._pending(mid)
        if not done.wait(WAIT_S):
            raise TimeoutError(f"no {what} for message id {mid}")
        return codes

    def subscribe(self, topic: str, qos: int = 1) -> int:
        """The SUBACK's reason code for this topic filter."""
        rc, mid = self.client.subscribe(topic, qos=qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS and mid is not None, (rc, topic)
        return self._wait_ack(mid, "SUBACK")[0]

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        """The PUBACK's reason code (QoS 1)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, (info.rc, topic)
        return self._wait_ack(info.mid, "PUBACK")[0]

    def wait_for(self, payload: bytes, what: str) -> Received:
        """The first message received with this payload."""
        with self._arrived:
            ok = self._arrived.wait_for(
                lambda: any(r.payload == payload for r in self.received), WAIT_S
            )
        if not ok:
            raise TimeoutError(f"{what} never arrived")
        return next(r for r in self.received if r.payload == payload)

    def payloads(self) -> set[bytes]:
        with self._arrived:
            return {r.payload for r in self.received}

    def wait_disconnected(self) -> int:
        if not self._disconnected.wait(WAIT_S):
            raise TimeoutError("still connected")
        assert self.disconnect_code is not None
        return self.disconnect_code

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def connect(
    host: str,
    port: int,
    username: str | None,
    password: str | None,
    client_id: str | None = None,
    *,
    ca_file: Path | None = None,
    cert: tuple[Path, Path] | None = None,
) -> Session:
    """Log in and return the session, whatever the CONNACK said (see ``connack``).

    Socket and TLS failures raise (OSError / ssl.SSLError).
    """
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id if client_id is not None else f"probe-{uuid.uuid4().hex[:10]}",
        protocol=mqtt.MQTTv5,
        reconnect_on_failure=False,
    )
    s = Session(client)
    if username is not None:
        client.username_pw_set(username, password)
    if ca_file is not None:
        ctx = ssl.create_default_context(cafile=str(ca_file))
        if cert is not None:
            ctx.load_cert_chain(str(cert[0]), str(cert[1]))
        client.tls_set_context(ctx)

    def on_connect(_c: object, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        s.connack = _code(rc)
        s._connected.set()

    def on_disconnect(_c: object, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        s.disconnect_code = _code(rc)
        s._connected.set()
        s._disconnected.set()

    def on_subscribe(_c: object, _u: object, mid: int, codes: list[ReasonCode], _p: object) -> None:
        done, got = s._pending(mid)
        got.extend(_code(c) for c in codes)
        done.set()

    def on_publish(_c: object, _u: object, mid: int, rc: ReasonCode, _p: object) -> None:
        done, got = s._pending(mid)
        got.append(_code(rc))
        done.set()

    def on_message(_c: object, _u: object, m: mqtt.MQTTMessage) -> None:
        with s._arrived:
            s.received.append(Received(m.topic, bytes(m.payload), bool(m.retain)))
            s._arrived.notify_all()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_subscribe = on_subscribe
    client.on_publish = on_publish
    client.on_message = on_message
    client.connect(host, port, keepalive=30)
    client.loop_start()
    if not s._connected.wait(WAIT_S):
        s.close()
        raise TimeoutError(f"no CONNACK from {host}:{port}")
    if not s.ok:
        client.loop_stop()
    return s
