"""Staged rollouts against rigged devices on the real broker: canaries first,
abort when failures exceed the threshold (canaries rolled back), proceed and
finish when they do not, and carry on across a restart of the cloud."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.harness import tool
from tests.remote_cloud.conftest import RemoteCloud, RigDevice, wait_for


def _online(rc: RemoteCloud, devices: list[str]) -> None:
    sql = "SELECT 1 FROM device_status WHERE online AND device_id = ANY($1::text[])"
    wait_for(lambda: len(rc.db(sql, devices)) == len(devices), "the rigged devices to be online")


def _rollout(rc: RemoteCloud, rid: int) -> dict[str, Any]:
    ans = rc.call("GET", f"/api/v1/config/rollouts/{rid}")
    assert ans.status == 200, ans.body
    return dict(ans.body)


def _finished(rc: RemoteCloud, rid: int, timeout: float = 60) -> dict[str, Any]:
    wait_for(lambda: _rollout(rc, rid)["state"] in ("done", "aborted"), "the rollout", timeout)
    return _rollout(rc, rid)


def _push(rc: RemoteCloud, fid: int, changes: dict[str, Any], **kw: Any) -> dict[str, Any]:
    ans = rc.call("POST", "/api/v1/config/rollouts", {"fleet_id": fid, "set": changes, **kw})
    assert ans.status == 201, ans.body
    return dict(ans.body)


def _fleet_with_online_canaries(
    rc: RemoteCloud, rig: Any, behaviours: list[str], offline: int
) -> tuple[int, list[RigDevice], list[str]]:
    """A fleet whose online devices (the only canary candidates) behave as given."""
    fid, devs = rc.fleet_with_devices(len(behaviours) + offline)
    base = rc.call("PUT", f"/api/v1/config/fleets/{fid}", {"config": {"sampler.min_interval_s": 3}})
    assert base.status == 200, base.body
    online = [rig(d, b) for d, b in zip(devs, behaviours, strict=False)]
    _online(rc, [d.device_id for d in online])
    for d in online:  # each has its first version before the rollout starts
        wait_for(lambda d=d: d.latest() is not None, f"{d.device_id}'s first config")
    return fid, online, devs[len(behaviours) :]


def test_rollout_aborts_when_canary_failures_exceed_the_threshold(
    remote_cloud: RemoteCloud, rig: Any
) -> None:
    fid, canaries, offline = _fleet_with_online_canaries(
        remote_cloud, rig, ["reject", "reject", "apply", "apply"], offline=6
    )
    r = _push(remote_cloud, fid, {"sampler.min_interval_s": 8}, canary_percent=40,
              max_failures_percent=25, wait_s=30)  # fmt: skip
    assert r["canary_count"] == 4 and r["devices_total"] == 10
    assert {m["device_id"] for m in r["members"] if m["phase"] == "canary"} == {
        d.device_id for d in canaries
    }
    r = _finished(remote_cloud, r["id"])
    assert r["state"] == "aborted", r
    assert "2 of 4 canaries failed" in r["reason"]
    assert r["failed_count"] == 2
    results = {m["device_id"]: m["result"] for m in r["members"]}
    assert [results[d.device_id] for d in canaries[:2]] == ["rejected", "rejected"]
    # The abort comes with the second rejection: a healthy canary may not have answered yet.
    assert {results[d.device_id] for d in canaries[2:]} <= {"applied", "cancelled"}
    assert all(results[d] is None for d in offline)  # never issued
    # Every canary is rolled back: a new version carrying its previous config.
    for d in canaries:
        wait_for(lambda d=d: d.latest() is not None and d.latest().version == 3,  # type: ignore[union-attr]
                 f"{d.device_id}'s rollback")  # fmt: skip
        assert [c.config["sampler.min_interval_s"] for c in d.configs] == [3.0, 8.0, 3.0]
        assert not d.bad, d.bad
    # The rest never saw the change; the fleet layer is as it was.
    rows = remote_cloud.db("SELECT version, document FROM device_config_desired"
                           " WHERE device_id = ANY($1::text[])", offline)  # fmt: skip
    assert len(rows) == 6 and all(
        r["version"] == 1 and json.loads(r["document"]) == {"sampler.min_interval_s": 3.0}
        for r in rows
    )
    layer = remote_cloud.call("GET", f"/api/v1/config/fleets/{fid}").body
    assert layer["config"] == {"sampler.min_interval_s": 3.0}


def test_failures_at_the_threshold_proceed_and_silence_counts_as_failure(
    remote_cloud: RemoteCloud, rig: Any
) -> None:
    # 1 of 4 canaries failing is 25%: at the threshold, not above it.
    fid, canaries, offline = _fleet_with_online_canaries(
        remote_cloud, rig, ["reject", "apply", "apply", "apply"], offline=2
    )
    r = _push(remote_cloud, fid, {"publisher.drain_rate": 300}, canary_percent=60,
              max_failures_percent=25, wait_s=5)  # fmt: skip
    assert r["canary_count"] == 4
    r = _finished(remote_cloud, r["id"])
    assert r["state"] == "done", r
    results = {m["device_id"]: (m["phase"], m["result"]) for m in r["members"]}
    assert all(results[d] == ("rest", "no_answer") for d in offline)  # offline: no report
    assert remote_cloud.call("GET", f"/api/v1/config/fleets/{fid}").body["config"] == {
        "sampler.min_interval_s": 3.0, "publisher.drain_rate": 300.0}  # fmt: skip

    # A silent canary is a failure once the wait is over.
    fid, canaries, _ = _fleet_with_online_canaries(
        remote_cloud, rig, ["silent", "apply"], offline=0
    )
    r = _push(remote_cloud, fid, {"publisher.drain_rate": 400}, canary_percent=100,
              max_failures_percent=0, wait_s=5)  # fmt: skip
    r = _finished(remote_cloud, r["id"])
    assert r["state"] == "aborted"
    silent = next(m for m in r["members"] if m["device_id"] == canaries[0].device_id)
    assert silent["result"] == "no_answer"


def test_healthy_rollout_completes_with_fleetctl(
    remote_cloud: RemoteCloud, rig: Any, tmp_path: Path
) -> None:
    fid, devices, _ = _fleet_with_online_canaries(remote_cloud, rig, ["apply"] * 6, offline=0)
    name = remote_cloud.db("SELECT name FROM fleets WHERE id = $1", fid)[0]["name"]
    env = {**os.environ, "FLEETCTL_CONFIG": str(tmp_path / "auth.json")}
    stack = remote_cloud.stack
    subprocess.run([tool("fleetctl"), "login", "--api", stack.base_url, "--email", stack.email,
                    "--password", stack.password], env=env, check=True, capture_output=True,
                   timeout=60)  # fmt: skip
    out = subprocess.run(
        [tool("fleetctl"), "config", "push", "--fleet", name, "--set", "sampler.min_interval_s=6",
         "--set", 'obd.pids=["rpm","speed"]', "--canary", "30%", "--max-failures", "20%",
         "--wait", "30", "--follow"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "done" in out.stdout
    rid = int(out.stdout.split()[1])
    r = _rollout(remote_cloud, rid)
    assert r["state"] == "done" and r["canary_count"] == 2 and r["applied_count"] == 6
    assert {m["result"] for m in r["members"]} == {"applied"}
    for d in devices:
        assert d.latest() is not None and d.latest().config == {  # type: ignore[union-attr]
            "sampler.min_interval_s": 6.0, "obd.pids": ["rpm", "speed"]}  # fmt: skip
        assert d.latest().version == 2 and not d.bad  # type: ignore[union-attr]
    status = subprocess.run([tool("fleetctl"), "config", "status", str(rid)], env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert status.returncode == 0 and "applied" in status.stdout
    assert all(d.device_id in status.stdout for d in devices)
    show = subprocess.run([tool("fleetctl"), "config", "show", devices[0].device_id], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert show.returncode == 0 and "desired version 2" in show.stdout and "in sync" in show.stdout
    sent = subprocess.run([tool("fleetctl"), "command", "send", devices[0].device_id, "locate",
                           "--wait", "30"], env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert sent.returncode == 0 and "done" in sent.stdout, sent.stdout + sent.stderr
    refused = subprocess.run([tool("fleetctl"), "command", "send", devices[0].device_id,
                              "clear_outbox"], env=env, capture_output=True, text=True,
                             timeout=60)  # fmt: skip
    assert refused.returncode == 1 and "confirm" in refused.stdout
    # A change nobody's config changes with finishes at once.
    again = _push(remote_cloud, fid, {"sampler.min_interval_s": 6})
    assert again["state"] == "done" and again["devices_total"] == 0


def test_rollout_carries_on_after_a_cloud_restart(remote_cloud: RemoteCloud, rig: Any) -> None:
    fid, canaries, _ = _fleet_with_online_canaries(remote_cloud, rig, ["silent"] * 2, offline=0)
    r = _push(remote_cloud, fid, {"sampler.min_interval_s": 9}, canary_percent=100,
              max_failures_percent=50, wait_s=6)  # fmt: skip
    assert r["state"] == "waiting"
    remote_cloud.stack.stop()
    remote_cloud.stack.start()
    remote_cloud.token = remote_cloud.stack.token()
    r = _finished(remote_cloud, r["id"])
    assert r["state"] == "aborted" and r["failed_count"] == 2
    for d in canaries:  # the restarted cloud rolled them back
        wait_for(lambda d=d: d.latest().version == 3, f"{d.device_id}'s rollback")  # type: ignore[union-attr]


def test_manual_abort_rolls_back_and_is_refused_twice(remote_cloud: RemoteCloud, rig: Any) -> None:
    fid, canaries, _ = _fleet_with_online_canaries(remote_cloud, rig, ["silent"] * 2, offline=0)
    r = _push(remote_cloud, fid, {"sampler.min_interval_s": 11}, canary_percent=100, wait_s=3600)
    path = f"/api/v1/config/rollouts/{r['id']}/abort"
    denied = remote_cloud.call("POST", path, token=remote_cloud.user("viewer"))
    assert denied.status == 403
    stopped = remote_cloud.call("POST", path)
    assert stopped.status == 200, stopped.body
    assert stopped.body["state"] == "aborted" and "aborted by" in stopped.body["reason"]
    assert {m["result"] for m in stopped.body["members"]} == {"cancelled"}
    assert stopped.body["failed_count"] == 0
    for d in canaries:
        wait_for(lambda d=d: d.latest().version == 3, f"{d.device_id}'s rollback")  # type: ignore[union-attr]
        assert [c.config["sampler.min_interval_s"] for c in d.configs] == [3.0, 11.0, 3.0]
    again = remote_cloud.call("POST", path)
    assert again.status == 409 and again.error_code() == "rollout_finished"
    busy_free = _push(remote_cloud, fid, {"sampler.min_interval_s": 12}, wait_s=3600)
    assert busy_free["state"] == "waiting"  # the fleet is free for the next rollout
    clash = remote_cloud.call("POST", "/api/v1/config/rollouts",
                              {"fleet_id": fid, "set": {"sampler.min_interval_s": 13}})  # fmt: skip
    assert clash.status == 409 and clash.error_code() == "rollout_in_progress"
    assert (
        remote_cloud.call("POST", f"/api/v1/config/rollouts/{busy_free['id']}/abort").status == 200
    )


def test_bad_rollout_requests_get_clear_4xx(remote_cloud: RemoteCloud) -> None:
    fid, _ = remote_cloud.fleet_with_devices(1)

    def push(body: dict[str, Any], token: str | None = None) -> Any:
        return remote_cloud.call("POST", "/api/v1/config/rollouts", body, token)

    ok = {"fleet_id": fid, "set": {"sampler.min_interval_s": 4}}
    for body, status, field in [
        ({**ok, "canary_percent": 0}, 422, "canary_percent"),
        ({**ok, "max_failures_percent": 101}, 422, "max_failures_percent"),
        ({**ok, "wait_s": 0}, 422, "wait_s"),
        ({**ok, "set": {}}, 422, "set"),
        ({**ok, "set": {"broker.password": "x"}}, 422, "set.broker.password"),
        ({"set": ok["set"]}, 422, "fleet_id"),
        ({"fleet_name": "no such fleet", "set": ok["set"]}, 404, "fleet_name"),
        ({**ok, "fleet_id": 10**9}, 404, None),
    ]:
        ans = push(body)
        assert ans.status == status, (body, ans.body)
        assert ans.body["error"].get("field") == field, (body, ans.body)
    assert push(ok, remote_cloud.user("dispatcher")).status == 403
    assert remote_cloud.call("GET", "/api/v1/config/rollouts/999999999").status == 404
    stranger = remote_cloud.user("owner", tenant=f"other-{fid}")
    assert push(ok, stranger).status == 404
