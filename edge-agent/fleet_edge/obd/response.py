"""ELM327 answers -> bytes and values: the pure, never-raising half of the driver.

An answer is what the adapter printed between our command and its ``>``
prompt. It may hold the echo of our command (clones ignore ATE0), a
``SEARCHING...`` line, an error word instead of data, one line per ECU, or an
ISO-TP multi-frame answer (``014`` then ``0:``, ``1:``... with headers off).
Everything here takes text and returns data or a reason; nothing raises on
any input, because an adapter on a noisy cable can print anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fleet_edge.obd.pids import response_size

# Adapter/vehicle conditions, each counted under its own reason.
ERRORS: dict[str, str] = {
    "NO DATA": "no_data",  # ECU did not answer (ignition off, unsupported PID)
    "STOPPED": "stopped",  # the adapter was interrupted by incoming bytes
    "UNABLE TO CONNECT": "unable_to_connect",  # no protocol found (ignition off)
    "BUS INIT": "bus_init_error",  # "BUS INIT: ...ERROR" on K-line
    "CAN ERROR": "can_error",
    "BUS ERROR": "bus_error",
    "BUS BUSY": "bus_busy",
    "FB ERROR": "fb_error",
    "DATA ERROR": "data_error",
    "BUFFER FULL": "buffer_full",
    "LV RESET": "lv_reset",  # adapter browned out and reset itself
    "ACT ALERT": "act_alert",
    "ERR": "err",
    "?": "unknown_command",
}

_HEX = re.compile(r"[0-9A-F]+")
_FRAME = re.compile(r"([0-9A-F]):([0-9A-F]*)")
_LENGTH = re.compile(r"[0-9A-F]{3}")
MAX_ANSWER_CHARS = 4096  # an adapter never prints this much for one request


@dataclass(frozen=True, slots=True)
class Answer:
    """Data lines (one per ECU, as bytes) or the reason there are none."""

    frames: tuple[bytes, ...] = ()
    error: str | None = None


def clean_lines(text: str, command: str) -> list[str]:
    """Lines of an answer without echo, SEARCHING..., spaces and blank lines."""
    out: list[str] = []
    cmd = command.replace(" ", "").upper()
    for raw in text[:MAX_ANSWER_CHARS].replace("\n", "\r").split("\r"):
        line = raw.replace("\x00", "").strip().upper()
        if not line or line == ">":
            continue
        compact = line.replace(" ", "")
        if compact == cmd:
            continue  # echo stuck on
        if compact.startswith("SEARCHING"):
            line = line[len("SEARCHING...") :].strip() if compact != "SEARCHING..." else ""
            if not line:
                continue
        out.append(line)
    return out


def parse_answer(text: str, command: str) -> Answer:
    """The data in an OBD answer, or the first error word the adapter printed."""
    lines = clean_lines(text, command)
    if not lines:
        return Answer(error="empty")
    for line in lines:
        for word, reason in ERRORS.items():
            if line.startswith(word) or (word not in ("?", "ERR") and word in line):
                return Answer(error=reason)
    compact = [ln.replace(" ", "") for ln in lines]
    if _LENGTH.fullmatch(compact[0]) and len(compact) > 1:
        joined = _multi_frame(compact)
        return Answer(frames=(joined,)) if joined is not None else Answer(error="bad_frame")
    frames: list[bytes] = []
    for c in compact:
        if not _HEX.fullmatch(c) or len(c) % 2:
            return Answer(error="not_hex")
        frames.append(bytes.fromhex(c))
    return Answer(frames=tuple(frames))


def _multi_frame(lines: list[str]) -> bytes | None:
    """ISO-TP with headers off: ``LLL`` (byte count, hex) then ``N:`` frames in order."""
    length = int(lines[0], 16)
    data = ""
    expect = 0
    for line in lines[1:]:
        m = _FRAME.fullmatch(line)
        if m is None or int(m[1], 16) != expect % 16 or len(m[2]) % 2:
            return None
        data += m[2]
        expect += 1
    raw = bytes.fromhex(data)
    if len(raw) < length:
        return None
    return raw[:length]  # the rest is padding


def split_mode01(frame: bytes, asked: list[int]) -> dict[int, bytes]:
    """A mode 01 answer (``41 pid data [pid data...]``) -> {pid: data}.

    Only PIDs we asked for are taken, and each must have its full size; a
    frame that does not add up yields what could be cut before the problem.
    """
    out: dict[int, bytes] = {}
    if len(frame) < 2 or frame[0] != 0x41:
        return out
    i = 1
    while i < len(frame):
        pid = frame[i]
        size = response_size(pid)
        if size is None or pid not in asked or i + 1 + size > len(frame):
            break
        out[pid] = frame[i + 1 : i + 1 + size]
        i += 1 + size
    return out


_DTC_LETTERS = "PCBU"


def dtc_code(hi: int, lo: int) -> str:
    """Two DTC bytes -> ``P0133``: two bits of letter, then four hex digits."""
    return f"{_DTC_LETTERS[hi >> 6]}{(hi >> 4) & 0x3:X}{hi & 0xF:X}{lo:02X}"


def parse_dtcs(frames: tuple[bytes, ...], mode: int, *, can: bool) -> list[str] | None:
    """Mode 03/07 answers -> sorted unique codes; None when no frame is a DTC answer.

    CAN puts a count byte after the mode byte; the older protocols send three
    codes per frame, padded with 0000 (which is "no code", not P0000).
    """
    reply = 0x40 + mode
    codes: set[str] = set()
    seen = False
    for f in frames:
        if not f or f[0] != reply:
            continue
        seen = True
        body = f[2:] if can and len(f) >= 2 else f[1:]
        if can and len(f) >= 2:
            body = body[: 2 * f[1]]
        for j in range(0, len(body) - 1, 2):
            if body[j] or body[j + 1]:
                codes.add(dtc_code(body[j], body[j + 1]))
    return sorted(codes) if seen else None


def parse_vin(frames: tuple[bytes, ...]) -> str | None:
    """Mode 09 PID 02 -> the 17-character VIN, or None if it is not one."""
    data = b""
    for f in frames:
        if len(f) >= 3 and f[0] == 0x49 and f[1] == 0x02:
            # CAN: 49 02 01 + 17 chars in one (multi-)frame; older protocols:
            # five frames 49 02 NN + 4 bytes each, the first padded with zeros.
            data += f[3:]
    text = data.lstrip(b"\x00").decode("ascii", "replace")
    vin = text[-17:] if len(text) >= 17 else ""
    if len(vin) == 17 and vin.isalnum() and vin.isascii() and not set(vin.upper()) & set("IOQ"):
        return vin.upper()
    return None


def parse_voltage(text: str) -> float | None:
    """``ATRV`` -> volts (``12.6V``)."""
    for line in clean_lines(text, "ATRV"):
        m = re.fullmatch(r"(\d{1,2}(?:\.\d{1,2})?)\s*V", line)
        if m:
            return float(m[1])
    return None
