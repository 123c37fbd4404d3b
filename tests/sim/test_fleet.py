"""``fleet-sim fleet`` against a real Mosquitto: wire v1, status, acks, resends."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import aiomqtt
import orjson
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fleet_wire import (
    CT_JSON,
    CT_JSON_ZLIB,
    Ack,
    Down,
    Fix,
    Status,
    Up,
    decode_model,
    decode_telemetry,
    down_topic,
    encode_json,
    parse_up_topic,
    up_topic,
)
from tests.harness import Broker, Proc, tool


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def mqtt(broker: Broker) -> aiomqtt.Client:
    user, password = broker.observer
    return aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=f"test-{uuid.uuid4().hex[:10]}",
        username=user,
        password=password,
        protocol=aiomqtt.ProtocolVersion.V5,
    )


def start_fleet(broker: Broker, log: Path, prefix: str, *args: str) -> Proc:
    argv = [tool("fleet-sim"), "fleet", "--broker", f"{broker.host}:{broker.port}"]
    if broker.proc is not None:  # a broker that runs: give the vans their accounts
        opt = dict(zip(args[::2], args[1::2], strict=False))
        first, count = int(opt.get("--first", 0)), int(opt.get("--count", 50))
        ids = [f"{prefix}-{i:04d}" for i in range(first, first + count)]
        passwords = log.with_suffix(".passwords.json")
        passwords.write_text(json.dumps(broker.device_passwords(ids)))
        argv += ["--password-file", str(passwords)]
    return Proc([*argv, "--prefix", prefix, *args], log).start()


def content_type(message: aiomqtt.Message) -> str | None:
    return getattr(message.properties, "ContentType", None)


def payload(message: aiomqtt.Message) -> bytes:
    assert isinstance(message.payload, bytes)
    return message.payload


async def consume(
    client: aiomqtt.Client,
    handle: Callable[[aiomqtt.Message], None],
    done: Callable[[], bool],
    within: float,
    what: str,
) -> None:
    try:
        async with asyncio.timeout(within):
            async for message in client.messages:
                handle(message)
                if done():
                    return
    except TimeoutError:
        raise AssertionError(f"timed out after {within}s waiting for {what}") from None


async def retained_status(
    broker: Broker, device_ids: list[str], within: float = 15
) -> dict[str, tuple[Status, bytes]]:
    """The retained up/status of each device, as a newcomer gets it."""
    found: dict[str, tuple[Status, bytes]] = {}
    async with mqtt(broker) as c:
        for d in device_ids:
            await c.subscribe(up_topic(d, Up.STATUS), qos=1)

        def handle(m: aiomqtt.Message) -> None:
            if not m.retain:
                return  # published just now, not what the broker kept
            up = parse_up_topic(m.topic.value)
            found[up.device_id] = (decode_model(payload(m), Status, content_type(m)), payload(m))

        await consume(c, handle, lambda: len(found) == len(device_ids), within, "retained status")
    return found


async def wait_for_status(
    broker: Broker, device_ids: list[str], online: bool, within: float = 30
) -> dict[str, tuple[Status, bytes]]:
    """Poll the retained status until every device's says online/offline."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            got = await retained_status(broker, device_ids, within=2)
            if all(s.online is online for s, _ in got.values()):
                return got
        except AssertionError:
            pass  # not every device has a retained status yet
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"retained status never became online={online}")
        await asyncio.sleep(0.2)


async def test_fleet_speaks_wire_v1(broker: Broker, tmp_path: Path) -> None:
    prefix = unique_prefix()
    devices = [f"{prefix}-{i:04d}" for i in range(3)]
    oracle = tmp_path / "oracle.jsonl"
    batches: dict[str, list[tuple[int, list[Fix]]]] = defaultdict(list)
    types: Counter[str | None] = Counter()
    async with mqtt(broker) as sub:
        await sub.subscribe("fleet/v1/+/up/telemetry", qos=1)
        proc = start_fleet(
            broker,
            tmp_path / "fleet.log",
            prefix,
            *("--count", "3", "--hz", "4", "--batch-seconds", "0.5", "--oracle", str(oracle)),
        )
        try:

            def handle(m: aiomqtt.Message) -> None:
                up = parse_up_topic(m.topic.value)
                if up.device_id not in devices:
                    return
                ct = content_type(m)
                types[ct] += 1
                assert payload(m)[:1] == (b"x" if ct == CT_JSON_ZLIB else b"{")
                boot, fixes, rejected = decode_telemetry(payload(m), ct)
                assert rejected == []
                batches[up.device_id].append((boot, fixes))

            def enough() -> bool:
                return all(len(batches[d]) >= 4 for d in devices)

            await consume(sub, handle, enough, 60, "telemetry from every vehicle")
            online = await retained_status(broker, devices)
        finally:
            rc = await asyncio.to_thread(proc.stop)
    assert rc == 0, proc.log()
    assert set(types) <= {CT_JSON, CT_JSON_ZLIB}

    for d in devices:
        status, _ = online[d]
        assert status.online is True
        assert status.agent and status.agent.startswith("fleet-sim/")
        boots = {boot for boot, _ in batches[d]}
        assert boots == {status.boot}
        assert status.boot is not None and 0 <= status.boot < 2**48
        seqs = [f.seq for _, fixes in batches[d] for f in fixes]
        assert seqs == list(range(1, len(seqs) + 1))  # first sends: from 1, no gaps
        for _, fixes in batches[d]:
            assert [f.seq for f in fixes] == sorted(f.seq for f in fixes)
            for f in fixes:
                assert round(f.lat, 6) == f.lat and round(f.lon, 6) == f.lon
                assert f.spd is not None and round(f.spd, 1) == f.spd
                assert f.hdg is not None and round(f.hdg, 1) == f.hdg
                assert f.fix in (2, 3)
                assert f.t % 10 == 0

    # The shutdown said goodbye on the retained status.
    offline = await retained_status(broker, devices)
    assert all(not s.online for s, _ in offline.values())

    # The oracle has every fix exactly as it went on the wire.
    records = [orjson.loads(line) for line in oracle.read_bytes().splitlines()]
    by_key = {(r["dev"], r["boot"], r["seq"]): r for r in records if "drop" not in r}
    for d in devices:
        for boot, fixes in batches[d]:
            for f in fixes:
                r = by_key[(d, boot, f.seq)]
                assert (r["t"], r["lat"], r["lon"], r["spd"]) == (f.t, f.lat, f.lon, f.spd)


async def test_acked_fixes_are_not_resent_and_unacked_ones_are(
    broker: Broker, tmp_path: Path
) -> None:
    prefix = unique_prefix()
    device = f"{prefix}-0000"
    sends: Counter[int] = Counter()
    boot: int | None = None
    async with mqtt(broker) as c:
        await c.subscribe(up_topic(device, Up.TELEMETRY), qos=1)
        proc = start_fleet(
            broker,
            tmp_path / "fleet.log",
            prefix,
            *("--count", "1", "--hz", "2", "--batch-seconds", "0.5", "--resend-seconds", "6"),
        )
        try:

            def handle(m: aiomqtt.Message) -> None:
                nonlocal boot
                b, fixes, _ = decode_telemetry(payload(m), content_type(m))
                boot = b
                sends.update(f.seq for f in fixes)

            await consume(c, handle, lambda: max(sends, default=0) >= 4, 30, "seqs 1..4")
            assert boot is not None
            props = Properties(PacketTypes.PUBLISH)
            props.ContentType = CT_JSON
            ack_topic = down_topic(device, Down.ACK)
            await c.publish(
                ack_topic, encode_json(Ack(boot=boot, seqs=[(1, 2)])), qos=1, properties=props
            )
            # An ack for another boot of the device must not make it forget seq 3.
            other = Ack(boot=(boot + 1) % 2**48, seqs=[(3, 3)])
            await c.publish(ack_topic, encode_json(other), qos=1, properties=props)
            # Garbage on down/ack must not hurt it either.
            await c.publish(ack_topic, b"\x00not json", qos=1)

            await consume(
                c, handle, lambda: sends[3] >= 2 and sends[4] >= 2, 40, "resends of seqs 3 and 4"
            )
            assert proc.alive()
        finally:
            rc = await asyncio.to_thread(proc.stop)
    assert rc == 0, proc.log()
    assert sends[1] == 1
    assert sends[2] == 1
    assert "bad ack" in proc.log()


async def test_last_will_on_kill(broker: Broker, tmp_path: Path) -> None:
    prefix = unique_prefix()
    devices = [f"{prefix}-0000", f"{prefix}-0001"]
    proc = start_fleet(broker, tmp_path / "fleet.log", prefix, "--count", "2")
    try:
        await wait_for_status(broker, devices, online=True)
    finally:
        await asyncio.to_thread(proc.kill9)
    got = await wait_for_status(broker, devices, online=False)
    # The broker published the Will, not the vehicle: nothing but the Will's payload.
    assert all(raw == b'{"v":1,"online":false}' for _, raw in got.values())


async def test_reconnects_after_broker_restart(tmp_path: Path) -> None:
    own = Broker(tmp_path / "broker").start()
    prefix = unique_prefix()
    device = f"{prefix}-0000"
    seen: list[tuple[int, int]] = []  # (boot, seq) first sends
    try:
        proc = start_fleet(
            own,
            tmp_path / "fleet.log",
            prefix,
            *("--count", "1", "--hz", "2", "--batch-seconds", "0.5"),
        )
        try:

            def handle(m: aiomqtt.Message) -> None:
                b, fixes, _ = decode_telemetry(payload(m), content_type(m))
                seen.extend((b, f.seq) for f in fixes)

            async with mqtt(own) as c:
                await c.subscribe(up_topic(device, Up.TELEMETRY), qos=1)
                await consume(c, handle, lambda: len(seen) >= 3, 30, "telemetry")
            before = max(seq for _, seq in seen)
            boot = seen[0][0]

            await asyncio.to_thread(own.kill9)
            await asyncio.sleep(1.0)  # the vehicle records on while the broker is gone
            own = Broker(own.data_dir, port=own.port).start()

            seen.clear()
            async with mqtt(own) as c:
                await c.subscribe(up_topic(device, Up.TELEMETRY), qos=1)
                await consume(c, handle, lambda: any(s > before + 2 for _, s in seen), 60, "more")
            status = (await retained_status(own, [device]))[device][0]
            assert proc.alive()
        finally:
            rc = await asyncio.to_thread(proc.stop)
        assert rc == 0, proc.log()
    finally:
        own.stop()
    assert {b for b, _ in seen} == {boot}  # same run: same boot, seq carries on
    assert status.online and status.boot == boot
    assert status.reconnects is not None and status.reconnects >= 1


@pytest.mark.timeout(240)
async def test_a_thousand_vehicles_in_one_process(broker: Broker, tmp_path: Path) -> None:
    prefix = unique_prefix()
    count = 1000
    devices = {f"{prefix}-{i:04d}" for i in range(count)}
    talked: set[str] = set()
    async with mqtt(broker) as c:
        await c.subscribe("fleet/v1/+/up/telemetry", qos=0)
        proc = start_fleet(
            broker,
            tmp_path / "fleet.log",
            prefix,
            *("--count", str(count), "--hz", "0.2", "--batch-seconds", "5"),
            *("--session-expiry", "60"),
        )
        try:

            def handle(m: aiomqtt.Message) -> None:
                up = parse_up_topic(m.topic.value)
                if up.device_id in devices:
                    decode_telemetry(payload(m), content_type(m))
                    talked.add(up.device_id)

            await consume(c, handle, lambda: talked == devices, 150, "all vehicles to talk")
        finally:
            rc = await asyncio.to_thread(proc.stop, 60)
    assert rc == 0, proc.log()[-2000:]
    assert "crash" not in proc.log()


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--count", "0"], "--count"),
        (["--broker", "localhost"], "--broker"),
        (["--broker", "localhost:99999"], "--broker"),
        (["--prefix", "Bad_Prefix"], "--prefix"),
        (["--hz", "0"], "--hz"),
        (["--batch-seconds", "-1"], "--batch-seconds"),
    ],
)
def test_bad_arguments_are_explained(args: list[str], complaint: str) -> None:
    r = subprocess.run(
        [tool("fleet-sim"), "fleet", *args], capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 2
    assert complaint in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        (None, "--password-file"),
        ("not json", "not JSON"),
        ('["a list"]', "expected a JSON object"),
        ('{"someone-else": "pw"}', "no password for 2 vehicle(s)"),
    ],
)
def test_a_bad_password_file_is_explained(
    tmp_path: Path, content: str | None, complaint: str
) -> None:
    f = tmp_path / "passwords.json"
    if content is not None:
        f.write_text(content)
    r = subprocess.run(
        [tool("fleet-sim"), "fleet", "--count", "2", "--password-file", str(f)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert complaint in r.stderr
    assert "Traceback" not in r.stderr


async def test_keeps_trying_without_a_broker(tmp_path: Path) -> None:
    from tests.harness import free_port

    nobody = Broker(tmp_path, port=free_port())  # never started
    proc = start_fleet(nobody, tmp_path / "fleet.log", unique_prefix(), "--count", "3")
    await asyncio.sleep(3)
    assert proc.alive()
    assert await asyncio.to_thread(proc.stop) == 0
    assert "Traceback" not in proc.log()
