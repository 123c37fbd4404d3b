"""HTTP ingest: the same pipeline as MQTT, identity from the device token only."""

from __future__ import annotations

import base64
import subprocess
import time
import urllib.error
import urllib.request

import orjson
import pytest

from tests.harness import CloudStack, db_fetch, tool

T0 = int(time.time() * 1000) - 60_000


def token_for(cloud: CloudStack, device: str) -> str:
    out = subprocess.run(
        [tool("fleet-cloud"), "device-token", device, "--dsn", cloud.dsn],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip()


def post(
    cloud: CloudStack, body: bytes, auth: str | None, path: str = "/api/v1/ingest"
) -> tuple[int, object]:
    req = urllib.request.Request(cloud.base_url + path, data=body, method="POST")
    req.add_header("content-type", "application/json")
    if auth:
        req.add_header("authorization", auth)
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, orjson.loads(e.read())


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="module")
def phone(cloud: CloudStack) -> tuple[str, str]:
    cloud.register_vehicle("Phone van", "phone-1")
    return "phone-1", token_for(cloud, "phone-1")


def test_batch_single_fix_and_retransmission(cloud: CloudStack, phone: tuple[str, str]) -> None:
    dev, tok = phone
    batch = {"v": 1, "boot": 5, "fixes": [
        {"seq": s, "t": T0 + s * 1000, "lat": 52.5 + s / 1e4, "lon": 13.4} for s in (1, 2, 3)
    ]}  # fmt: skip
    status, doc = post(cloud, orjson.dumps(batch), f"Bearer {tok}")
    assert status == 200, doc
    assert doc == {"device_id": dev, "boot": 5, "acked": [[1, 3]], "filtered": {}, "rejected": []}
    assert cloud.stored_seqs(dev, 5) == [1, 2, 3]  # committed before the answer
    status, _ = post(cloud, orjson.dumps(batch), f"Bearer {tok}")  # retransmission
    assert status == 200 and cloud.stored_seqs(dev, 5) == [1, 2, 3]
    one = {"seq": 9, "t": T0 + 9000, "lat": 52.6, "lon": 13.5}
    status, doc = post(cloud, orjson.dumps(one), f"Bearer {tok}", "/api/v1/gps")  # seed alias
    assert status == 200 and doc["acked"] == [[9, 9]] and doc["boot"] == 0  # type: ignore[index]


def test_owntracks_location(cloud: CloudStack, phone: tuple[str, str]) -> None:
    dev, tok = phone
    tst = T0 // 1000 + 30
    loc = {"_type": "location", "tid": "xx", "lat": 52.51, "lon": 13.41, "tst": tst,
           "vel": 42, "cog": 90, "alt": 35, "acc": 10, "batt": 80}  # fmt: skip
    status, doc = post(cloud, orjson.dumps(loc), basic(dev, tok))
    assert (status, doc) == (200, [])  # OwnTracks expects a JSON array
    (row,) = db_fetch(
        cloud.dsn,
        "SELECT boot_id, speed, heading FROM positions WHERE device_id = $1 AND seq = $2",
        dev,
        tst,
    )
    assert (row["boot_id"], row["speed"], row["heading"]) == (1, 42.0, 90.0)


def test_invalid_and_foreign_tokens(cloud: CloudStack, phone: tuple[str, str]) -> None:
    dev, _ = phone
    cloud.register_vehicle("Other van", "phone-2")
    other = token_for(cloud, "phone-2")
    fix = orjson.dumps({"seq": 1, "t": T0, "lat": 52.5, "lon": 13.4})
    assert post(cloud, fix, None)[0] == 401
    assert post(cloud, fix, "Bearer fdt_not-a-real-token")[0] == 401
    assert post(cloud, fix, basic(dev, "fdt_wrong"))[0] == 401
    status, doc = post(cloud, fix, basic(dev, other))  # phone-2's token claiming to be phone-1
    assert status == 403 and doc["error"]["code"] == "forbidden"  # type: ignore[index]
    # A Bearer token decides the identity: nothing in a body can claim another device.
    assert post(cloud, fix, f"Bearer {other}")[0] == 200
    assert cloud.stored_seqs("phone-2", 0) == [1]
    subprocess.run([tool("fleet-cloud"), "device-token", "phone-2", "--revoke", "--dsn", cloud.dsn],
                   check=True, capture_output=True)  # fmt: skip
    assert post(cloud, fix, f"Bearer {other}")[0] == 401


def test_bad_bodies_get_clear_errors_and_dead_letters(
    cloud: CloudStack, phone: tuple[str, str]
) -> None:
    dev, tok = phone
    status, doc = post(cloud, b"{nope", f"Bearer {tok}")
    assert status == 422 and doc["error"]["code"] == "not_json"  # type: ignore[index]
    status, doc = post(
        cloud, orjson.dumps({"seq": 1, "t": T0, "lat": 95, "lon": 0}), f"Bearer {tok}"
    )
    assert status == 200 and doc["rejected"][0]["seq"] == 1  # type: ignore[index]
    assert "lat" in doc["rejected"][0]["reason"]  # type: ignore[index]
    status, doc = post(cloud, b"{" + b" " * 300_000 + b"}", f"Bearer {tok}")
    assert status == 413
    reasons = {
        r["reason"]
        for r in db_fetch(cloud.dsn, "SELECT reason FROM dead_letters WHERE device_id = $1", dev)
    }
    assert {"not_json", "schema"} <= reasons
