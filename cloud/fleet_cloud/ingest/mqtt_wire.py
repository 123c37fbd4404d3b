"""The few MQTT v5 packets the ingest needs, encoded and decoded from a byte buffer.

Only what an ingest subscriber uses (MQTT 5.0, OASIS standard): CONNECT /
CONNACK, SUBSCRIBE / SUBACK, PUBLISH (QoS 0 and 1) both ways, PUBACK, PINGREQ /
PINGRESP and DISCONNECT. Properties are skipped by length except the ones we
read (Content Type) or send (Session Expiry Interval, Receive Maximum).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 12, 13, 14

PROP_CONTENT_TYPE = 0x03
PROP_SESSION_EXPIRY = 0x11
PROP_RECEIVE_MAXIMUM = 0x21

PINGREQ_PACKET = b"\xc0\x00"


class ProtocolError(Exception):
    """The broker sent something we cannot read: drop the connection and reconnect."""


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_varint(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int] | None:
    """(value, next position), or None if the buffer ends inside the number."""
    value, shift = 0, 0
    for i in range(4):
        if pos + i >= len(buf):
            return None
        byte = buf[pos + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos + i + 1
        shift += 7
    raise ProtocolError("malformed variable byte integer")


def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def _packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + varint(len(body)) + body


def connect(
    client_id: str,
    keepalive: int,
    clean_start: bool,
    session_expiry: int,
    receive_maximum: int,
    username: str | None = None,
    password: str | None = None,
) -> bytes:
    flags = (0x02 if clean_start else 0) | (0x80 if username is not None else 0)
    flags |= 0x40 if password is not None else 0
    props = bytes([PROP_SESSION_EXPIRY]) + struct.pack("!I", session_expiry)
    props += bytes([PROP_RECEIVE_MAXIMUM]) + struct.pack("!H", receive_maximum)
    body = _str("MQTT") + bytes([5, flags]) + struct.pack("!H", keepalive)
    body += varint(len(props)) + props + _str(client_id)
    if username is not None:
        body += _str(username)
    if password is not None:
        body += _str(password)
    return _packet(CONNECT << 4, body)


def subscribe(packet_id: int, topic_filter: str, qos: int) -> bytes:
    body = struct.pack("!H", packet_id) + b"\x00" + _str(topic_filter) + bytes([qos])
    return _packet(SUBSCRIBE << 4 | 0x02, body)


def publish(topic: str, payload: bytes, packet_id: int, content_type: str | None) -> bytes:
    """A QoS 1 PUBLISH."""
    props = b""
    if content_type is not None:
        props = bytes([PROP_CONTENT_TYPE]) + _str(content_type)
    body = _str(topic) + struct.pack("!H", packet_id) + varint(len(props)) + props + payload
    return _packet(PUBLISH << 4 | 0x02, body)


def puback(packet_id: int) -> bytes:
    return struct.pack("!BBH", PUBACK << 4, 2, packet_id)


def disconnect(session_expiry: int | None = None) -> bytes:
    if session_expiry is None:
        return b"\xe0\x00"
    props = bytes([PROP_SESSION_EXPIRY]) + struct.pack("!I", session_expiry)
    return _packet(DISCONNECT << 4, b"\x00" + varint(len(props)) + props)


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str
    payload: bytes
    qos: int
    packet_id: int | None
    content_type: str | None


def _content_type(props: bytes | memoryview) -> str | None:
    """Content Type from a PUBLISH property block; other properties are skipped."""
    pos = 0
    while pos < len(props):
        ident = props[pos]
        pos += 1
        if ident == PROP_CONTENT_TYPE:
            (n,) = struct.unpack_from("!H", props, pos)
            return bytes(props[pos + 2 : pos + 2 + n]).decode("utf-8", "replace")
        if ident in (0x01,):  # payload format indicator: byte
            pos += 1
        elif ident in (0x02,):  # message expiry: four bytes
            pos += 4
        elif ident in (0x23,):  # topic alias: two bytes
            pos += 2
        elif ident in (0x08, 0x09):  # response topic, correlation data: length-prefixed
            (n,) = struct.unpack_from("!H", props, pos)
            pos += 2 + n
        elif ident == 0x0B:  # subscription identifier: varint
            r = read_varint(props, pos)
            if r is None:
                raise ProtocolError("truncated subscription identifier")
            pos = r[1]
        elif ident == 0x26:  # user property: two strings
            for _ in range(2):
                (n,) = struct.unpack_from("!H", props, pos)
                pos += 2 + n
        else:
            raise ProtocolError(f"unexpected PUBLISH property 0x{ident:02x}")
    return None


def parse_publish(flags: int, body: memoryview) -> Publish:
    qos = (flags >> 1) & 0x03
    (tlen,) = struct.unpack_from("!H", body, 0)
    topic = bytes(body[2 : 2 + tlen]).decode("utf-8", "replace")
    pos = 2 + tlen
    packet_id = None
    if qos:
        (packet_id,) = struct.unpack_from("!H", body, pos)
        pos += 2
    r = read_varint(body, pos)
    if r is None:
        raise ProtocolError("truncated PUBLISH properties")
    plen, pos = r
    ct = _content_type(body[pos : pos + plen]) if plen else None
    return Publish(topic, bytes(body[pos + plen :]), qos, packet_id, ct)
