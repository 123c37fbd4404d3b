"""Cut a serial byte stream into lines without ever buffering an unbounded one."""

from __future__ import annotations

# NMEA 0183 caps a sentence at 82 characters; some receivers exceed it with
# proprietary sentences. Past this, a "line" is noise (wrong baud rate, binary
# protocol) and is dropped rather than buffered.
MAX_LINE_BYTES = 128


class LineSplitter:
    """Splits on CR or LF; drops (and counts) lines longer than ``max_len``."""

    def __init__(self, max_len: int = MAX_LINE_BYTES) -> None:
        self._max = max_len
        self._buf = bytearray()
        self._discarding = False  # inside an over-long line, waiting for its end
        self.too_long = 0

    def feed(self, data: bytes) -> list[bytes]:
        lines: list[bytes] = []
        parts = data.replace(b"\r", b"\n").split(b"\n")
        # Every part but the last was terminated by a line end.
        for part in parts[:-1]:
            if self._discarding:
                self._discarding = False
            elif len(self._buf) + len(part) > self._max:
                self.too_long += 1
            elif self._buf or part:
                lines.append(bytes(self._buf) + part)
            self._buf.clear()
        tail = parts[-1]
        if self._discarding:
            pass
        elif len(self._buf) + len(tail) > self._max:
            self.too_long += 1
            self._discarding = True
            self._buf.clear()
        else:
            self._buf += tail
        return lines

    def reset(self) -> None:
        """Forget a partial line (the port was closed mid-line)."""
        self._buf.clear()
        self._discarding = False
