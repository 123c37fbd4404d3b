"""What a Raspberry Pi installs: `pip install .[edge]` pulls no cloud libraries."""

from __future__ import annotations

import re
from importlib import metadata

FORBIDDEN_ON_A_PI = {"fastapi", "asyncpg", "shapely", "uvicorn", "starlette", "redis"}


def _name(req: str) -> str:
    return re.split(r"[ ;<>=!~\[]", req, maxsplit=1)[0].lower().replace("_", "-")


def _closure(roots: set[str]) -> set[str]:
    """Every distribution these need, following installed metadata (base requirements only)."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [_name(r) for r in reqs if "extra ==" not in r]
    return seen


def test_edge_extra_pulls_no_cloud_library() -> None:
    reqs = metadata.requires("fleet-telemetry") or []
    edge = {_name(r) for r in reqs if "extra ==" not in r or re.search(r'extra == "edge"', r)}
    assert {"pydantic", "orjson", "aiomqtt", "pyserial", "pynmea2"} <= edge
    pulled = _closure(edge)
    assert not pulled & FORBIDDEN_ON_A_PI, sorted(pulled & FORBIDDEN_ON_A_PI)


def test_console_scripts_exist() -> None:
    scripts = {e.name for e in metadata.entry_points(group="console_scripts")}
    assert {"fleet-agent", "fleet-cloud", "fleet-sim", "fleetctl"} <= scripts
