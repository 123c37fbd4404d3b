"""Waiting on conditions from async tests, with generous deadlines (shared CI cores)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def eventually(pred: Callable[[], bool], within_s: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within_s}s waiting for {what}")
        await asyncio.sleep(0.05)
