"""ELM327 protocol: initialise the adapter, find the vehicle's protocol and PIDs, read values.

What real adapters and vehicles do, and what this does about it:
- clones ignore ATE0 and echo every command: the echo is stripped, not trusted;
- clones are slow: every timeout is generous and configurable;
- the first OBD request after ATSP0 prints SEARCHING... while the adapter
  tries protocols (seconds), then UNABLE TO CONNECT if the ignition is off;
- an ECU that does not answer a PID says NO DATA; a bus problem prints
  CAN ERROR / BUS INIT: ...ERROR; an interrupted request says STOPPED;
- several PIDs per request only on CAN (ISO 15765-4), at most six, and some
  clones get it wrong: on the first such failure the driver falls back to one
  PID per request for the rest of the connection.
Every refused answer is counted by reason.
"""

from __future__ import annotations

from collections import Counter

from fleet_edge.obd.link import ElmLink
from fleet_edge.obd.pids import BY_PID, SUPPORT_PIDS, decode_value, supported_from_bitmap
from fleet_edge.obd.response import (
    Answer,
    clean_lines,
    parse_answer,
    parse_dtcs,
    parse_vin,
    parse_voltage,
    split_mode01,
)

# ATDPN answers a protocol number, "A" in front when it was found automatically.
PROTOCOLS: dict[str, str] = {
    "1": "SAE J1850 PWM",
    "2": "SAE J1850 VPW",
    "3": "ISO 9141-2",
    "4": "ISO 14230-4 KWP (5 baud init)",
    "5": "ISO 14230-4 KWP (fast init)",
    "6": "ISO 15765-4 CAN (11 bit, 500 kbaud)",
    "7": "ISO 15765-4 CAN (29 bit, 500 kbaud)",
    "8": "ISO 15765-4 CAN (11 bit, 250 kbaud)",
    "9": "ISO 15765-4 CAN (29 bit, 250 kbaud)",
    "A": "SAE J1939 CAN",
}
CAN_PROTOCOLS = frozenset("6789")
MAX_PIDS_PER_REQUEST = 6  # J1979 limit for one CAN request

# Echo off, linefeeds off, spaces off, headers off, adaptive timing, auto protocol.
INIT_COMMANDS = ("ATE0", "ATL0", "ATS0", "ATH0", "ATAT1", "ATSP0")


class Elm327:
    def __init__(self, link: ElmLink, timeout_s: float, search_timeout_s: float) -> None:
        self.link = link
        self.timeout_s = timeout_s
        self.search_timeout_s = search_timeout_s
        self.adapter: str | None = None  # ATZ banner, e.g. "ELM327 v1.5"
        self.protocol: str | None = None  # ATDPN digit
        self.supported: set[int] = set()
        self.multi_pid = False
        self.rejected: Counter[str] = Counter()  # refused answers by reason
        self.answers = 0  # answers that carried data

    @property
    def protocol_name(self) -> str | None:
        return None if self.protocol is None else PROTOCOLS.get(self.protocol, self.protocol)

    @property
    def can(self) -> bool:
        return self.protocol in CAN_PROTOCOLS

    async def _at(self, command: str, wait_s: float | None = None) -> str:
        return await self.link.request(command, wait_s or self.timeout_s)

    async def initialise(self) -> None:
        """Reset the adapter and set it up; raises TimeoutError if it is not an ELM327."""
        banner = await self._at("ATZ", max(self.timeout_s, 5.0))
        lines = [ln.strip() for ln in banner.replace("\n", "\r").split("\r") if "ELM" in ln]
        self.adapter = lines[-1] if lines else None
        for cmd in INIT_COMMANDS:
            text = await self._at(cmd)
            if "OK" not in clean_lines(text, cmd):
                # Clones answer "?" to what they do not implement (ATAT1 often):
                # counted, not fatal; the defaults are workable.
                self.rejected[f"init_{cmd.lower()}"] += 1
        self.protocol = None
        self.supported = set()
        self.multi_pid = False

    async def obd(self, command: str, wait_s: float | None = None) -> Answer:
        text = await self._at(command, wait_s)
        ans = parse_answer(text, command)
        if ans.error is not None:
            self.rejected[ans.error] += 1
        else:
            self.answers += 1
        return ans

    async def connect(self) -> bool:
        """Find the vehicle's protocol and its supported PIDs. False if the ECU is silent."""
        first = await self.obd("0100", self.search_timeout_s)
        if first.error is not None:
            return False
        supported: set[int] = set()
        ans: Answer | None = first
        for base in SUPPORT_PIDS:
            if base:
                if base not in supported:
                    break
                ans = await self.obd(f"01{base:02X}")
            found = False
            for frame in ans.frames if ans is not None else ():
                data = split_mode01(frame, [base]).get(base)
                if data is not None:
                    supported |= supported_from_bitmap(base, data)
                    found = True
            if not found:
                break
        dpn = "".join(clean_lines(await self._at("ATDPN"), "ATDPN")).lstrip("A")[:1]
        self.protocol = dpn if dpn in PROTOCOLS else None
        self.supported = supported
        self.multi_pid = self.can
        return True

    async def read(self, pids: list[int]) -> dict[int, float]:
        """Values of these mode 01 PIDs (the supported ones), in one request where allowed.

        A PID the ECU left out is simply missing from the result.
        """
        pids = [p for p in pids if p in BY_PID][:MAX_PIDS_PER_REQUEST]
        if not pids:
            return {}
        if len(pids) > 1 and not self.multi_pid:
            out: dict[int, float] = {}
            for p in pids:
                out.update(await self.read([p]))
            return out
        ans = await self.obd("01" + "".join(f"{p:02X}" for p in pids))
        data: dict[int, bytes] = {}
        for frame in ans.frames:  # one per ECU; the first to answer a PID wins
            for pid, raw in split_mode01(frame, pids).items():
                data.setdefault(pid, raw)
        if ans.error is None and not data:
            self.rejected["bad_frame"] += 1
        if len(pids) > 1 and ans.error is None and len(data) < len(pids):
            # A clone that cannot do several PIDs at once: one at a time from now on.
            self.multi_pid = False
            self.rejected["multi_pid_unsupported"] += 1
        values: dict[int, float] = {}
        for pid, raw in data.items():
            v = decode_value(BY_PID[pid], raw)
            if v is not None:
                values[pid] = v
        return values

    async def dtcs(self, mode: int) -> list[str] | None:
        """Stored (03) or pending (07) trouble codes; None if the ECU did not answer."""
        ans = await self.obd(f"{mode:02X}")
        if ans.error == "no_data":
            return []  # many ECUs say NO DATA when they have no codes
        return parse_dtcs(ans.frames, mode, can=self.can)

    async def vin(self) -> str | None:
        ans = await self.obd("0902", max(self.timeout_s, 2.0))
        vin = parse_vin(ans.frames)
        if ans.error is None and vin is None:
            self.rejected["bad_vin"] += 1
        return vin

    async def voltage(self) -> float | None:
        """Battery voltage at the OBD socket (pin 16), measured by the adapter itself."""
        return parse_voltage(await self._at("ATRV"))
