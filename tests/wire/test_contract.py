"""The wire contract: topics, models and codec, including hostile payloads."""

from __future__ import annotations

import zlib

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet_wire import (
    CT_JSON,
    CT_JSON_ZLIB,
    MAX_PAYLOAD_BYTES,
    Ack,
    Down,
    Fix,
    Status,
    TopicError,
    Up,
    WireError,
    decode_model,
    decode_telemetry,
    down_topic,
    encode_json,
    maybe_compress,
    parse_up_topic,
    seq_ranges,
    telemetry_body,
    up_topic,
)

T0 = 1_763_700_000_000


def fix(seq: int, **kw: object) -> Fix:
    return Fix(**{"seq": seq, "t": T0 + seq * 1000, "lat": 52.52, "lon": 13.405, **kw})


def test_topics_round_trip_and_refuse_bad_ids() -> None:
    t = up_topic("van-042", Up.TELEMETRY)
    assert t == "fleet/v1/van-042/up/telemetry"
    assert parse_up_topic(t).device_id == "van-042"
    assert down_topic("van-042", Down.ACK) == "fleet/v1/van-042/down/ack"
    for bad in ["#", "+", "a/b", "AB", "x", "-ab", "a" * 65, ""]:
        with pytest.raises(TopicError):
            up_topic(bad, Up.STATUS)
    for bad_topic in [
        "fleet/v1/van-042/down/ack",
        "fleet/v1/van-042/up/nope",
        "fleet/v2/van-042/up/telemetry",
        "fleet/v1/van-042/up/telemetry/extra",
        "fleet/v1/#/up/telemetry",
    ]:
        with pytest.raises(TopicError):
            parse_up_topic(bad_topic)


def test_batch_encodes_once_and_decodes_plain_and_compressed() -> None:
    fixes = [fix(i, spd=42.5, hdg=181.0, eng={"rpm": 1500, "ign": True}) for i in range(1, 61)]
    body = telemetry_body(99, [encode_json(f) for f in fixes])
    payload, ct = maybe_compress(body)
    assert ct == CT_JSON_ZLIB and len(payload) < len(body)
    for data, content_type in [(body, CT_JSON), (payload, ct), (payload, None), (body, None)]:
        boot, got, bad = decode_telemetry(data, content_type)
        assert (boot, got, bad) == (99, fixes, [])


def test_small_payload_is_not_compressed() -> None:
    body = telemetry_body(1, [encode_json(fix(1))])
    assert maybe_compress(body) == (body, CT_JSON)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "empty"),
        (b"not json", "not_json"),
        (b"[1,2]", "schema"),
        (b'{"v":2,"boot":1,"fixes":[]}', "unsupported_version"),
        (b'{"boot":1,"fixes":[]}', "unsupported_version"),
        (b'{"v":1,"boot":-1,"fixes":[{"seq":1,"t":1763700000000,"lat":1,"lon":1}]}', "schema"),
        (b'{"v":1,"boot":1,"fixes":[]}', "schema"),
        (b"x\x9c garbage", "bad_compression"),
        (b"{" + b" " * MAX_PAYLOAD_BYTES + b"}", "too_large"),
    ],
)
def test_malformed_payloads_raise_wire_error_with_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(WireError) as e:
        decode_telemetry(payload)
    assert e.value.reason == reason


def test_zip_bomb_is_refused() -> None:
    bomb = zlib.compress(b"{" + b" " * (50 * 1024 * 1024) + b"}")
    assert len(bomb) < MAX_PAYLOAD_BYTES
    with pytest.raises(WireError) as e:
        decode_telemetry(bomb, CT_JSON_ZLIB)
    assert e.value.reason == "too_large"


def test_unknown_content_type_is_refused() -> None:
    with pytest.raises(WireError) as e:
        decode_telemetry(b"{}", "application/x-msgpack")
    assert e.value.reason == "bad_content_type"


def test_partly_bad_batch_salvages_valid_fixes() -> None:
    good = orjson.loads(encode_json(fix(1)))
    bad_lat = {**good, "seq": 2, "lat": 123.0}
    unknown_key = {**good, "seq": 3, "evil": 1}
    no_seq = {"t": T0, "lat": 1, "lon": 1}
    doc = {"v": 1, "boot": 5, "fixes": [good, bad_lat, unknown_key, no_seq]}
    boot, got, bad = decode_telemetry(orjson.dumps(doc))
    assert boot == 5 and [f.seq for f in got] == [1]
    assert [b.seq for b in bad] == [2, 3, None]
    assert all(b.reason.startswith("schema") for b in bad)


def test_fix_never_carries_out_of_range_values() -> None:
    for kw in [{"lat": 91}, {"lon": -181}, {"spd": -1}, {"hdg": 361}, {"fix": 1}, {"t": 0}]:
        with pytest.raises(ValueError):
            fix(1, **kw)


def test_imu_peaks_travel_with_the_fix() -> None:
    doc = {"v": 1, "boot": 1, "fixes": [
        {"seq": 1, "t": T0, "lat": 52.5, "lon": 13.4, "imu": {"ax_min": -6.5, "ay_max": 2}},
    ]}  # fmt: skip
    _, good, rejected = decode_telemetry(orjson.dumps(doc))
    assert rejected == [] and good[0].imu is not None
    assert (good[0].imu.ax_min, good[0].imu.ax_max, good[0].imu.ay_max) == (-6.5, None, 2)


def test_ack_and_status_models() -> None:
    ack = decode_model(encode_json(Ack(boot=3, seqs=[(1, 5), (9, 9)])), Ack)
    assert ack.seqs == [(1, 5), (9, 9)]
    will = decode_model(b'{"v":1,"online":false}', Status)
    assert will.online is False


def test_seq_ranges() -> None:
    assert seq_ranges([]) == []
    assert seq_ranges([5, 1, 2, 3, 3, 9, 10]) == [(1, 3), (5, 5), (9, 10)]


@given(st.binary(max_size=2048), st.sampled_from([None, CT_JSON, CT_JSON_ZLIB, "text/plain"]))
def test_any_bytes_give_a_result_or_a_wire_error(data: bytes, ct: str | None) -> None:
    try:
        decode_telemetry(data, ct)
    except WireError:
        pass


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda kids: (
            st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=8), kids, max_size=5)
        ),
        max_leaves=30,
    )
)
def test_any_json_gives_a_result_or_a_wire_error(doc: object) -> None:
    for candidate in (doc, {"v": 1, "boot": 1, "fixes": doc}, {"v": 1, "boot": 1, "fixes": [doc]}):
        try:
            decode_telemetry(orjson.dumps(candidate, option=orjson.OPT_NON_STR_KEYS))
        except WireError:
            pass
        except orjson.JSONEncodeError:
            pass


@pytest.mark.parametrize(
    "bad",
    [
        {"seq": True}, {"seq": "1"}, {"lat": "52.5"}, {"t": 1.763e12}, {"eng": {"ign": 1}},
        {"imu": {"ax_min": "-6"}}, {"imu": {"ay_max": -1.0}}, {"imu": {"ax_max": 101.0}},
        {"imu": {"az": 1.0}},
    ],
)  # fmt: skip
def test_scalars_are_strict(bad: dict[str, object]) -> None:
    doc = {"v": 1, "boot": 1, "fixes": [{"seq": 1, "t": T0, "lat": 52.5, "lon": 13.4, **bad}]}
    _, good, rejected = decode_telemetry(orjson.dumps(doc))
    assert good == [] and len(rejected) == 1


def test_ack_ranges_must_be_ordered() -> None:
    with pytest.raises(WireError) as e:
        decode_model(b'{"v":1,"boot":1,"seqs":[[5,1]]}', Ack)
    assert e.value.reason == "schema" and "first > last" in e.value.detail


@pytest.mark.parametrize("v", [b"true", b"1.0", b'"1"'])
def test_version_must_be_the_integer_1(v: bytes) -> None:
    doc = b'{"v":%b,"boot":1,"fixes":[{"seq":1,"t":1763700000000,"lat":1,"lon":1}]}' % v
    with pytest.raises(WireError) as e:
        decode_telemetry(doc)
    assert e.value.reason == "unsupported_version"


def test_bytes_after_the_zlib_stream_are_refused() -> None:
    body = telemetry_body(1, [encode_json(fix(1))])
    with pytest.raises(WireError) as e:
        decode_telemetry(zlib.compress(body) + b"extra", CT_JSON_ZLIB)
    assert e.value.reason == "bad_compression"
