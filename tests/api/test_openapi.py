"""The OpenAPI document describes every operation: tags, a schema for every success
body, 404 wherever a path names a resource (schemathesis checks the answers match)."""

from __future__ import annotations

from typing import Any

from fleet_cloud.api.app import create_app
from fleet_cloud.settings import Settings


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    doc = create_app(Settings(), run_ingest=False).openapi()
    return [(m.upper(), p, op) for p, item in doc["paths"].items() for m, op in item.items()]


def test_every_operation_is_tagged_and_typed() -> None:
    problems = []
    ops = _operations()
    for method, path, op in ops:
        where = f"{method} {path}"
        if not op.get("tags"):
            problems.append(f"{where}: no tags")
        for status, resp in op["responses"].items():
            if not status.startswith("2") or status == "204":
                continue
            content = resp.get("content") or {}
            if not content or any(not v.get("schema") for v in content.values()):
                problems.append(f"{where}: {status} has no body schema (response_model?)")
        if "{" in path and "404" not in op["responses"]:
            problems.append(f"{where}: names a resource but documents no 404")
    assert len(ops) > 60
    assert not problems, "\n".join(problems)
