"""Commands: published on down/cmd with an MQTT expiry matching expires_at,
results from up/cmd stored, unanswered ones marked expired, bad requests 4xx."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.remote_cloud.conftest import RemoteCloud, wait_for


def _command(rc: RemoteCloud, dev: str, cid: str) -> dict[str, Any]:
    ans = rc.call("GET", f"/api/v1/devices/{dev}/commands/{cid}")
    assert ans.status == 200, ans.body
    return dict(ans.body)


def test_command_published_with_expiry_and_result_stored(
    remote_cloud: RemoteCloud, rig: Any
) -> None:
    _fid, (dev,) = remote_cloud.fleet_with_devices(1)
    device = rig(dev, "apply")
    sent = remote_cloud.call("POST", f"/api/v1/devices/{dev}/commands",
                             {"kind": "set_interval", "args": {"min_interval_s": 2},
                              "expires_in_s": 120})  # fmt: skip
    assert sent.status == 201, sent.body
    c = sent.body
    assert c["args"] == {"min_interval_s": 2.0}  # the answer may already be in
    wait_for(lambda: _command(remote_cloud, dev, c["id"])["status"] == "done", "the result")
    done = _command(remote_cloud, dev, c["id"])
    assert done["message"] == "rigged"
    assert done["result"] == {"kind": "set_interval", "min_interval_s": 2.0}
    assert done["sent_at"] is not None and done["answered_at"] is not None
    ((cmd, props),) = device.commands
    assert cmd.id == c["id"] and cmd.kind == "set_interval"
    # The broker's copy expires with the command: the interval the device saw
    # is what was left of the 120 s when it was published.
    assert 100 <= props.MessageExpiryInterval <= 120
    expires_ms = int(time.mktime(time.strptime(c["expires_at"][:19], "%Y-%m-%dT%H:%M:%S"))
                     - time.timezone) * 1000  # fmt: skip
    assert abs(cmd.expires_at - expires_ms) < 1000
    listed = remote_cloud.call("GET", f"/api/v1/devices/{dev}/commands").body
    assert [x["id"] for x in listed] == [c["id"]]


def test_unanswered_command_is_marked_expired(remote_cloud: RemoteCloud, rig: Any) -> None:
    _fid, (dev,) = remote_cloud.fleet_with_devices(1)
    device = rig(dev, "silent")
    sent = remote_cloud.call("POST", f"/api/v1/devices/{dev}/commands",
                             {"kind": "locate", "expires_in_s": 5})  # fmt: skip
    assert sent.status == 201, sent.body
    cid = sent.body["id"]
    wait_for(lambda: len(device.commands) == 1, "the command to reach the device")
    wait_for(lambda: _command(remote_cloud, dev, cid)["status"] == "expired", "expiry", 30)
    assert "no answer" in _command(remote_cloud, dev, cid)["message"]


def test_device_rejection_is_stored(remote_cloud: RemoteCloud, rig: Any) -> None:
    _fid, (dev,) = remote_cloud.fleet_with_devices(1)
    rig(dev, "reject")
    cid = remote_cloud.call("POST", f"/api/v1/devices/{dev}/commands",
                            {"kind": "restart"}).body["id"]  # fmt: skip
    wait_for(lambda: _command(remote_cloud, dev, cid)["status"] == "rejected", "the rejection")
    assert _command(remote_cloud, dev, cid)["message"] == "rigged to reject"


def test_bad_command_requests_get_clear_4xx(remote_cloud: RemoteCloud) -> None:
    _fid, (dev,) = remote_cloud.fleet_with_devices(1)
    path = f"/api/v1/devices/{dev}/commands"

    def post(body: dict[str, Any], token: str | None = None) -> Any:
        return remote_cloud.call("POST", path, body, token)

    ans = post({"kind": "clear_outbox"})
    assert ans.status == 400 and ans.body["error"]["field"] == "confirm", ans.body
    ans = post({"kind": "clear_outbox", "confirm": True})
    assert ans.status == 201 and ans.body["args"] == {"confirm": True}
    ans = post({"kind": "self_destruct"})
    assert ans.status == 422 and ans.body["error"]["field"] == "kind"
    ans = post({"kind": "set_interval", "args": {}})
    assert ans.status == 400 and ans.body["error"]["field"] == "args"
    ans = post({"kind": "set_interval", "args": {"min_interval_s": -1}})
    assert ans.status == 400 and ans.body["error"]["field"] == "args.min_interval_s"
    ans = post({"kind": "locate", "args": {"extra": 1}})
    assert ans.status == 400 and ans.body["error"]["field"] == "args.extra"
    ans = post({"kind": "locate", "expires_in_s": 10**9})
    assert ans.status == 422 and ans.body["error"]["field"] == "expires_in_s"
    ans = remote_cloud.call("POST", "/api/v1/devices/no-such-device/commands", {"kind": "locate"})
    assert ans.status == 404
    assert remote_cloud.call("GET", f"{path}/nope").status == 404

    dispatcher = remote_cloud.user("dispatcher")
    assert post({"kind": "locate"}, dispatcher).status == 201
    ans = post({"kind": "restart"}, dispatcher)
    assert ans.status == 403 and ans.error_code() == "forbidden"
    assert post({"kind": "locate"}, remote_cloud.user("viewer")).status == 403


def test_unstorable_or_unknown_results_are_dead_lettered(
    remote_cloud: RemoteCloud, broker: Any
) -> None:
    from tests.harness import mqtt_publish

    _fid, (dev,) = remote_cloud.fleet_with_devices(1)
    cid = remote_cloud.call("POST", f"/api/v1/devices/{dev}/commands", {"kind": "locate"}).body[
        "id"
    ]
    topic = f"fleet/v1/{dev}/up/cmd"
    t = int(time.time() * 1000)
    # A NUL character is valid JSON that PostgreSQL refuses to store.
    nul = json.dumps({"v": 1, "id": cid, "status": "done", "message": "a\u0000b", "t": t})
    mqtt_publish(broker, topic, nul.encode(), "application/json")
    unknown = json.dumps({"v": 1, "id": "never-sent", "status": "done", "t": t})
    mqtt_publish(broker, topic, unknown.encode(), "application/json")
    good = json.dumps({"v": 1, "id": cid, "status": "done", "message": "here", "t": t})
    mqtt_publish(broker, topic, good.encode(), "application/json")
    # Ingest carried on: the good answer behind the bad ones is stored.
    wait_for(lambda: _command(remote_cloud, dev, cid)["message"] == "here", "the good answer")

    def reasons() -> set[str]:
        sql = "SELECT reason FROM dead_letters WHERE device_id = $1"
        return {r["reason"] for r in remote_cloud.db(sql, dev)}

    wait_for(lambda: reasons() == {"unstorable", "unknown_command"}, "both dead letters")
