"""Moving vehicles for bench/fanout: publishes one single-fix telemetry message per vehicle
per period over MQTT v5 QoS 1, each fix stamped with the wall clock as it is published.

    python bench/fanout/load.py --host H --port P --user U --password PW \
        --devices dev-0000,dev-0001,... --hz 1 --seconds 40

Identity is the topic's device id (the account is a test observer allowed to publish
on fleet/v1/#: a thousand device logins would measure the broker's login path).
Prints one JSON line: messages published, the achieved rate, and how many the broker
had not acknowledged when the run ended (a backlog inside this generator).
"""

from __future__ import annotations

import argparse
import sys
import time

import orjson
import paho.mqtt.client as mqtt

from fleet_wire import Up, up_topic


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--devices", required=True, help="comma-separated device ids")
    ap.add_argument("--hz", type=float, default=1.0, help="fixes per vehicle per second")
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--boot", type=int, default=1)
    args = ap.parse_args()
    devices = args.devices.split(",")
    topics = [up_topic(d, Up.TELEMETRY) for d in devices]
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"fanout-load-{devices[0]}",
        protocol=mqtt.MQTTv5,
    )  # fmt: skip
    if args.user:
        client.username_pw_set(args.user, args.password)
    # No in-flight window: paho (2.2) walks every in-flight message on each PUBACK
    # once a window is set (Client._update_inflight), so with a window of 10,000
    # a backlog made each ack cost 10,000 steps and the generator collapsed to a
    # few hundred messages/s while publish() still returned at 10k/s: the fixes
    # were stamped, then sat here for seconds. Unlimited: every publish is written
    # at once and the broker's acks cost O(1).
    client.max_inflight_messages_set(0)
    client.max_queued_messages_set(0)
    acked = 0

    def on_publish(*_: object) -> None:
        nonlocal acked
        acked += 1

    client.on_publish = on_publish
    client.connect(args.host, args.port)
    client.loop_start()
    period = 1.0 / args.hz
    began = time.monotonic()
    end = began + args.seconds
    sent, k = 0, 0
    while time.monotonic() < end:
        k += 1
        for i, topic in enumerate(topics):
            now = int(time.time() * 1000)
            fix = {"seq": k, "t": now, "lat": 52.4 + i * 1e-3 + k * 2e-6, "lon": 13.3 + i * 1e-3,
                   "spd": 40.0, "hdg": 0.0}  # fmt: skip
            client.publish(topic, orjson.dumps({"v": 1, "boot": args.boot, "fixes": [fix]}), qos=1)
            sent += 1
        time.sleep(max(0.0, began + k * period - time.monotonic()))
    elapsed = time.monotonic() - began
    unacked = sent - acked
    client.disconnect()
    client.loop_stop()
    out = {"sent": sent, "rate": sent / elapsed, "unacked_at_end": unacked}
    sys.stdout.write(orjson.dumps(out).decode() + "\n")


if __name__ == "__main__":
    main()
