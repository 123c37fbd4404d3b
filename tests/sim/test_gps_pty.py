"""``fleet-sim gps --pty`` as the agent meets it: a subprocess, a serial port, pyserial."""

from __future__ import annotations

import itertools
import os
import re
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import orjson
import pynmea2
import pytest
import serial

from tests.harness import tool, wait_until


@dataclass
class Gps:
    proc: subprocess.Popen[bytes]
    pty: str
    link: Path
    log: Path

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(15)

    def stats(self) -> tuple[int, int]:
        """(epochs written, dropped) from the exit log line."""
        m = re.search(r"(\d+) epochs written, (\d+) dropped", self.log.read_text())
        assert m, self.log.read_text()
        return int(m[1]), int(m[2])


@contextmanager
def gps(tmp_path: Path, *args: str) -> Iterator[Gps]:
    link = tmp_path / "gps0"
    log = tmp_path / "gps.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [tool("fleet-sim"), "gps", "--pty", "--link", str(link), *args],
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
        )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "no pty path printed"
        first = proc.stdout.readline().decode().strip()
        yield Gps(proc, first, link, log)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


def read_for(port: serial.Serial, seconds: float) -> list[bytes]:
    """Complete lines (without CR LF) read during the next seconds."""
    buf = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        buf += port.read(4096)
    lines = buf.split(b"\r\n")[:-1]  # the last one may be cut off
    # The first may have lost its start to the flush pyserial does on open.
    while lines and not lines[0].startswith(b"$"):
        lines.pop(0)
    return lines


def open_port(path: Path) -> serial.Serial:
    return serial.Serial(str(path), 9600, timeout=0.2)


def ms(msg: pynmea2.RMC) -> int:
    return int(msg.datetime.replace(tzinfo=UTC).timestamp() * 1000 + 0.5)


def oracle_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_stream_rate_and_oracle(tmp_path: Path) -> None:
    oracle = tmp_path / "oracle.jsonl"
    with gps(tmp_path, "--hz", "5", "--seed", "11", "--oracle", str(oracle)) as g:
        assert re.fullmatch(r"/dev/pts/\d+", g.pty)
        assert os.readlink(g.link) == g.pty
        with open_port(g.link) as port:
            lines = read_for(port, 4.0)
            read_at = time.time()
        assert g.stop() == 0
        assert not os.path.lexists(g.link)

    msgs = [pynmea2.parse(line.decode("ascii"), check=True) for line in lines]  # all valid
    rmcs = [m for m in msgs if isinstance(m, pynmea2.RMC)]
    assert 10 <= len(rmcs) <= 25, len(rmcs)
    times = [ms(m) for m in rmcs]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(g > 0 and g % 200 == 0 for g in gaps), gaps
    assert sum(g == 200 for g in gaps) >= 0.8 * len(gaps)
    assert abs(times[-1] / 1000 - read_at) < 3  # fix time is the wall clock
    kinds = {m.sentence_type for m in msgs}
    assert kinds == {"RMC", "VTG", "GGA", "GSA", "GSV", "ZDA"}
    # GSV and ZDA come once a second, the rest every epoch.
    assert sum(m.sentence_type == "ZDA" for m in msgs) <= len(rmcs) // 5 + 1

    records = {r["t"]: r for r in oracle_lines(oracle)}
    assert all(r["src"] == "gps" for r in records.values())
    for m in rmcs:
        if m.status != "A":
            continue
        r = records[ms(m)]
        assert r["lat"] == round(m.latitude, 6)
        assert r["lon"] == round(m.longitude, 6)
        assert r["spd"] == pytest.approx(float(m.spd_over_grnd) * 1.852, abs=0.06)
    # Nothing logged that the reader did not get, while it was reading.
    assert {t for t in records if times[0] <= t <= times[-1]} == {
        ms(m) for m in rmcs if m.status == "A"
    }


def test_reader_can_close_and_reopen(tmp_path: Path) -> None:
    with gps(tmp_path, "--hz", "2") as g:
        with open_port(g.link) as port:
            first = read_for(port, 1.5)
        time.sleep(1.0)  # nobody has the port open now
        with open_port(g.link) as port:
            second = read_for(port, 2.0)
        assert g.proc.poll() is None
        assert g.stop() == 0
    t1 = [ms(m) for m in map(pynmea2.parse, map(bytes.decode, first)) if isinstance(m, pynmea2.RMC)]
    t2 = [
        ms(m) for m in map(pynmea2.parse, map(bytes.decode, second)) if isinstance(m, pynmea2.RMC)
    ]
    assert t1 and t2
    assert min(t2) > max(t1)


def test_nobody_reading_drops_epochs(tmp_path: Path) -> None:
    with gps(tmp_path, "--hz", "10") as g:
        time.sleep(4.0)  # ~40 epochs, far more than a serial port buffers
        # Open without pyserial's input flush, to see what the port held.
        fd = os.open(g.link, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            held = b""
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                held += chunk
        finally:
            os.close(fd)
        assert 0 < len(held) <= 4096
        assert g.stop() == 0
        written, dropped = g.stats()
    assert dropped > 0
    assert written > 0


def test_no_fix(tmp_path: Path) -> None:
    oracle = tmp_path / "oracle.jsonl"
    with gps(tmp_path, "--hz", "2", "--no-fix", "--oracle", str(oracle)) as g:
        with open_port(g.link) as port:
            lines = read_for(port, 2.5)
        assert g.stop() == 0
    msgs = [pynmea2.parse(line.decode("ascii"), check=True) for line in lines]
    rmcs = [m for m in msgs if isinstance(m, pynmea2.RMC)]
    ggas = [m for m in msgs if isinstance(m, pynmea2.GGA)]
    assert rmcs and ggas
    assert all(m.status == "V" and m.lat == "" for m in rmcs)
    assert all(m.gps_qual == 0 for m in ggas)
    assert oracle_lines(oracle) == []


def test_fault_injection_and_oracle_marks(tmp_path: Path) -> None:
    oracle = tmp_path / "oracle.jsonl"
    args = ["--hz", "10", "--seed", "3", "--oracle", str(oracle), "--talker", "GN"]
    args += ["--bad-checksum-rate", "0.15", "--garbage-rate", "0.15"]
    with gps(tmp_path, *args) as g:
        with open_port(g.link) as port:
            lines = read_for(port, 3.0)
        assert g.stop() == 0
    records = {r["t"]: r for r in oracle_lines(oracle)}
    good = bad_sum = junk = 0
    for raw in lines:
        text = raw.decode("latin-1")
        try:
            msg = pynmea2.parse(text, check=True)
        except pynmea2.ChecksumError:
            if "\x00" in text or "*" not in text:
                junk += 1
                continue
            bad_sum += 1
            if text.startswith("$GNRMC,") and text.split(",")[2] == "A":
                t = ms(pynmea2.parse(text.split("*")[0]))  # parse without the checksum
                assert "RMC" in records[t]["bad"]
            continue
        except pynmea2.ParseError:
            junk += 1
            continue
        good += 1
        assert msg.talker in ("GN", "GP", "GL")
    assert good > 100
    assert bad_sum > 5
    assert junk > 5


def test_replaces_a_stale_link(tmp_path: Path) -> None:
    link = tmp_path / "gps0"
    link.symlink_to("/dev/pts/99999")
    with gps(tmp_path) as g:
        assert os.readlink(link) == g.pty
        assert g.stop() == 0
    assert not os.path.lexists(link)


def test_refuses_to_replace_a_file(tmp_path: Path) -> None:
    (tmp_path / "gps0").write_text("precious")
    r = subprocess.run(
        [tool("fleet-sim"), "gps", "--pty", "--link", str(tmp_path / "gps0")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1
    assert "not a symlink" in r.stderr
    assert "Traceback" not in r.stderr
    assert (tmp_path / "gps0").read_text() == "precious"


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--hz", "11"], "--hz"),
        (["--hz", "abc"], "--hz"),
        (["--bad-checksum-rate", "2"], "--bad-checksum-rate"),
        (["--talker", "gps"], "--talker"),
    ],
)
def test_bad_arguments_are_explained(args: list[str], complaint: str) -> None:
    r = subprocess.run(
        [tool("fleet-sim"), "gps", "--pty", *args], capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 2
    assert complaint in r.stderr
    assert "Traceback" not in r.stderr


def test_pty_is_required() -> None:
    r = subprocess.run([tool("fleet-sim"), "gps"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "--pty" in r.stderr
    assert "Traceback" not in r.stderr


def test_sigint_also_cleans_up(tmp_path: Path) -> None:
    with gps(tmp_path) as g:
        wait_until(lambda: os.path.lexists(g.link), 10, "link")
        g.proc.send_signal(signal.SIGINT)
        assert g.proc.wait(15) == 0
        assert not os.path.lexists(g.link)
