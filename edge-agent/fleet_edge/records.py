"""How a fix is stored and how stored fixes become a telemetry payload.

A fix is serialised once, when it is recorded, without its seq (the seq is
assigned by the outbox's INSERT). Sending splices ``{"seq":N,`` in front of the
stored body and concatenates bodies into a batch: nothing is re-serialised on
the hot path, and a re-sent batch is byte-identical to the first attempt.
"""

from __future__ import annotations

from typing import NamedTuple

from fleet_edge.gps.fix import GpsFix
from fleet_wire import MAX_PAYLOAD_BYTES, Engine, Fix, encode_json, maybe_compress, telemetry_body


class OutboxRow(NamedTuple):
    seq: int
    boot: int
    t: int
    body: bytes  # the fix's JSON object without "seq"


def encode_fix(fix: GpsFix) -> bytes:
    """The stored body of a fix. Raises pydantic.ValidationError if the wire schema refuses it.

    Validating here, before the fix is stored, keeps the outbox free of rows
    the cloud would only dead-letter.
    """
    wire = Fix(
        seq=1,  # placeholder for validation; not part of the stored body
        t=fix.t,
        lat=fix.lat,
        lon=fix.lon,
        spd=fix.speed_kmh,
        hdg=fix.course_deg,
        alt=fix.alt_m,
        hdop=fix.hdop,
        sat=fix.sats,
        fix=fix.fix_type,
        eng=_engine(fix),
    )
    return encode_json(wire.model_dump(mode="json", exclude_none=True, exclude={"seq"}))


def _engine(fix: GpsFix) -> Engine | None:
    """The fix's latest engine values with their age, or None when it carries none."""
    if fix.eng is None or not fix.eng.model_dump(exclude_none=True):
        return None
    return fix.eng


def with_seq(seq: int, body: bytes) -> bytes:
    """``{"t":...}`` -> ``{"seq":N,"t":...}`` (a body always has at least ``t``)."""
    return b'{"seq":%d,%b' % (seq, body[1:])


def build_payloads(boot: int, rows: list[OutboxRow]) -> list[tuple[list[OutboxRow], bytes, str]]:
    """One boot's rows -> [(rows, payload, content type)], each payload under the broker's limit.

    Normally one payload; a batch too large even compressed is halved until it fits.
    """
    body = telemetry_body(boot, [with_seq(r.seq, r.body) for r in rows])
    payload, content_type = maybe_compress(body)
    if len(payload) <= MAX_PAYLOAD_BYTES or len(rows) == 1:
        return [(rows, payload, content_type)]
    half = len(rows) // 2
    return build_payloads(boot, rows[:half]) + build_payloads(boot, rows[half:])
