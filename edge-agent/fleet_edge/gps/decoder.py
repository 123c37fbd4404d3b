"""Bytes from a receiver -> GPS readings: line splitting, parsing, epoch assembly."""

from __future__ import annotations

from collections import Counter
from datetime import date

from fleet_edge.gps.epoch import EpochAssembler
from fleet_edge.gps.fix import GpsReading
from fleet_edge.gps.lines import MAX_LINE_BYTES, LineSplitter
from fleet_edge.gps.nmea_parser import NmeaParser

TOO_LONG = "too_long"


class NmeaDecoder:
    """Feed it any bytes; it yields readings and counts what it refused.

    Never raises on input: a receiver, a wrong baud rate or a flaky cable can
    produce anything, and none of it may stop the agent.
    """

    def __init__(self, max_line: int = MAX_LINE_BYTES, not_before: date | None = None) -> None:
        self._lines = LineSplitter(max_line)
        self._parser = NmeaParser()
        self._epochs = EpochAssembler(not_before)

    def feed(self, data: bytes) -> list[GpsReading]:
        out: list[GpsReading] = []
        for line in self._lines.feed(data):
            sentence = self._parser.parse(line)
            if sentence is not None:
                out += self._epochs.add(sentence)
        return out

    @property
    def pending(self) -> bool:
        """An epoch has begun and is waiting for more sentences."""
        return self._epochs.pending

    def flush_pending(self) -> list[GpsReading]:
        """The receiver went quiet: emit the pending epoch with what it has."""
        return self._epochs.flush_pending()

    def reset(self) -> list[GpsReading]:
        """The stream was cut: drop the partial line, emit the pending epoch."""
        self._lines.reset()
        return self._epochs.flush()

    @property
    def accepted(self) -> int:
        return self._parser.accepted

    @property
    def ignored(self) -> int:
        return self._parser.ignored

    @property
    def rejected(self) -> Counter[str]:
        """Refused lines by reason (too_long, bad_checksum, no_checksum, ...)."""
        counts = Counter(self._parser.rejected)
        if self._lines.too_long:
            counts[TOO_LONG] = self._lines.too_long
        return counts

    @property
    def epochs_without_rmc(self) -> int:
        return self._epochs.without_rmc

    @property
    def date_flags(self) -> Counter[str]:
        """Epochs refused for an untrusted date (week rollover, before the build date)."""
        return self._epochs.date_flags

    @property
    def sats_in_view(self) -> int | None:
        return self._epochs.sats_in_view
