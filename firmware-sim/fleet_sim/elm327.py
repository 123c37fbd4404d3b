"""What an ELM327 prints: AT command handling and OBD answers, pure (no I/O, no clock).

``Elm327Emulator.handle(command, state)`` returns the exact text an adapter
writes back, prompt included, for the settings the driver changed (echo,
linefeeds, spaces). The vehicle speaks ISO 15765-4 CAN 11 bit / 500 kbaud;
answers longer than one CAN frame come as ISO-TP multi-frame text (``014``
then ``0:``, ``1:``...), exactly as a real adapter prints them with headers off.

Quirky-clone mode reproduces the cheap v1.5/v2.1 clones: ATE0 is ignored
(echo stays on), ATAT is unknown (``?``), and a request for several PIDs is
answered for the first PID only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fleet_sim.vehicle import SUPPORTED, EngineState, pid_bytes, support_bitmap

GENUINE_BANNER = "ELM327 v1.4b"
CLONE_BANNER = "ELM327 v2.1"
DEFAULT_VIN = "WVWZZZ1KZ8W123456"
PROTOCOL = "6"
PROTOCOL_NAME = "ISO 15765-4 (CAN 11/500)"
MAX_PIDS = 6


def dtc_bytes(code: str) -> bytes:
    """``P0133`` -> b'\\x01\\x33'."""
    letter = "PCBU".index(code[0])
    return bytes([letter << 6 | int(code[1], 16) << 4 | int(code[2], 16), int(code[3:5], 16)])


def valid_dtc(code: str) -> bool:
    if len(code) != 5 or code[0] not in "PCBU":
        return False
    try:
        dtc_bytes(code)
    except ValueError:
        return False
    return int(code[1], 16) <= 3


@dataclass
class Settings:
    echo: bool = True
    linefeeds: bool = True
    spaces: bool = True
    headers: bool = False
    connected: bool = False  # a protocol was found (the first OBD request searches)


@dataclass
class Elm327Emulator:
    clone: bool = False
    vin: str = DEFAULT_VIN
    stored: list[str] = field(default_factory=list)  # DTCs for mode 03
    pending: list[str] = field(default_factory=list)  # mode 07
    ambient_c: float = 15.0
    settings: Settings = field(default_factory=Settings)

    def reset(self) -> None:
        self.settings = Settings()

    # -- output formatting ---------------------------------------------------

    def _eol(self) -> str:
        return "\r\n" if self.settings.linefeeds else "\r"

    def _hex(self, data: bytes) -> str:
        sep = " " if self.settings.spaces else ""
        return sep.join(f"{b:02X}" for b in data)

    def _frames(self, payload: bytes) -> list[str]:
        """One CAN answer as the adapter prints it with headers off."""
        if len(payload) <= 7:
            return [self._hex(payload)]
        sep = " " if self.settings.spaces else ""
        lines = [f"{len(payload):03X}"]
        first, rest = payload[:6], payload[6:]
        lines.append(f"0:{sep}{self._hex(first)}")
        n = 1
        while rest:
            chunk, rest = rest[:7], rest[7:]
            padded = self._hex(chunk.ljust(7, bytes(1)))  # real frames are padded
            lines.append(f"{n % 16:X}:{sep}{padded}")
            n += 1
        return lines

    def _reply(self, command: str, lines: list[str], echo_on: bool) -> str:
        eol = self._eol()
        echo = command + eol if echo_on else ""
        return echo + eol.join(lines) + eol + eol + ">"

    # -- commands ------------------------------------------------------------

    def handle(self, raw: str, state: EngineState) -> str:
        command = raw.strip()
        cmd = command.replace(" ", "").upper()
        if not cmd:
            return ">"  # a bare CR (a real ELM327 would repeat the last command)
        echo = self.settings.echo  # the command is echoed before it is executed (ATE0 too)
        if cmd.startswith("AT"):
            return self._reply(command, self._at(cmd[2:], state), echo)
        if not all(c in "0123456789ABCDEF" for c in cmd) or len(cmd) % 2:
            return self._reply(command, ["?"], echo)
        return self._reply(command, self._obd(bytes.fromhex(cmd), state), echo)

    def _at(self, at: str, state: EngineState) -> list[str]:
        s = self.settings
        banner = CLONE_BANNER if self.clone else GENUINE_BANNER
        if at in ("Z", "WS", "D"):
            self.reset()
            return ["", banner] if at != "D" else ["OK"]
        if at == "I":
            return [banner]
        if at == "@1":
            return ["OBDII to RS232 Interpreter"]
        if at == "RV":
            # The adapter measures the socket's pin 16: battery, charging or not.
            return [f"{state.module_v:.1f}V"]
        if at == "DPN":
            return [f"A{PROTOCOL}" if s.connected else "0"]
        if at == "DP":
            return [f"AUTO, {PROTOCOL_NAME}" if s.connected else "AUTO"]
        flags = {"E": "echo", "L": "linefeeds", "S": "spaces", "H": "headers"}
        if len(at) == 2 and at[0] in flags and at[1] in "01":
            if not (self.clone and at[0] == "E"):  # the clone's echo is stuck on
                setattr(s, flags[at[0]], at[1] == "1")
            return ["OK"]
        if at.startswith("AT") and at[2:] in ("0", "1", "2"):
            return ["?"] if self.clone else ["OK"]
        if at.startswith("SP") or at.startswith("TP"):
            s.connected = False
            return ["OK"]
        if at.startswith("ST") or at in ("M0", "M1", "CAF0", "CAF1", "PC"):
            return ["OK"]
        return ["?"]

    def _obd(self, req: bytes, state: EngineState) -> list[str]:
        lines: list[str] = []
        if not self.settings.connected:
            lines.append("SEARCHING...")
            if not state.ignition:
                return [*lines, "UNABLE TO CONNECT"]
            self.settings.connected = True
        if not state.ignition:
            return [*lines, "NO DATA"]
        payload = self._answer(req, state)
        if payload is None:
            return [*lines, "NO DATA"]
        return [*lines, *self._frames(payload)]

    def _answer(self, req: bytes, state: EngineState) -> bytes | None:
        mode, args = req[0], req[1:]
        if mode == 0x01 and 1 <= len(args) <= MAX_PIDS:
            if self.clone:
                args = args[:1]
            out = bytearray([0x41])
            for pid in args:
                data = (
                    support_bitmap(pid) if pid % 0x20 == 0 else
                    pid_bytes(pid, state, self.ambient_c) if pid in SUPPORTED else None
                )  # fmt: skip
                if data is not None:
                    out += bytes([pid]) + data
            return bytes(out) if len(out) > 1 else None
        if mode in (0x03, 0x07) and not args:
            codes = self.stored if mode == 0x03 else self.pending
            body = b"".join(dtc_bytes(c) for c in codes)
            return bytes([0x40 + mode, len(codes)]) + body
        if mode == 0x04 and not args:
            self.stored.clear()
            self.pending.clear()
            state.dist_since_clear_km = 0.0
            return b"\x44"
        if mode == 0x09 and args == b"\x02":
            return b"\x49\x02\x01" + self.vin.encode("ascii")
        if mode == 0x09 and args == b"\x00":
            return b"\x49\x00\x54\x40\x00\x00"
        return None
