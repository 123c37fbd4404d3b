"""schemathesis against the live OpenAPI document: for every operation, generated
requests (bounded examples) sent with an owner's credential must never answer 5xx,
and every answer must match the document (status code, content type, body schema).

Runs in the default suite (about a minute). The owner's credential is an API key: a
session token could be ended by the very requests under test (logout, a password
change of the caller), an API key only by deleting it, which the run cannot name.
Raise FLEET_FUZZ_EXAMPLES for a deeper run.
"""

from __future__ import annotations

import os
import subprocess
import traceback
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.harness import Broker, CloudStack, call, tool

EXAMPLES = int(os.environ.get("FLEET_FUZZ_EXAMPLES", "12"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

pytestmark = pytest.mark.fuzz


@pytest.fixture(scope="module")
def fuzz_cloud(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudStack]:
    """A tenant of its own: whatever the generated requests create or delete stays in it."""
    broker = Broker(tmp_path_factory.mktemp("fuzz-mosquitto")).start()
    suffix = uuid.uuid4().hex[:6]
    # a deployment as documented: remote config has its signing key
    key = tmp_path_factory.mktemp("fuzz-key") / "config-signing.key"
    subprocess.run([tool("fleet-cloud"), "config-keygen", "--file", str(key)],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    stack = CloudStack(
        broker, database, tmp_path_factory.mktemp("fuzz-cloud"),
        tenant=f"fuzz-{suffix}", email=f"fuzz-{suffix}@test.local",
        extra_env={
            "FLEET_TENANT_RATE_PER_S": "0",  # the limiter has its own tests
            "FLEET_CONFIG_SIGNING_KEY_FILE": str(key),
        },
    )  # fmt: skip
    try:
        yield stack.start()
    finally:
        stack.stop()
        broker.stop()


def _owner_key(stack: CloudStack) -> str:
    a = call(stack.base_url, "POST", "/api/v1/api-keys", {"name": "fuzz", "role": "owner"},
             stack.token())  # fmt: skip
    assert a.status == 201, a.body
    return str(a.body["key"])


def test_every_operation_conforms_and_never_fails(fuzz_cloud: CloudStack) -> None:
    doc = call(fuzz_cloud.base_url, "GET", "/api/v1/openapi.json").body
    schema = schemathesis.openapi.from_dict(_homogeneous_tuples_as_arrays(doc))
    headers = {"Authorization": f"Bearer {_owner_key(fuzz_cloud)}"}
    failures: list[str] = []
    tested = 0
    for result in schema.get_all_operations():
        if isinstance(result, Err):  # the document cannot describe this operation
            failures.append(f"invalid operation in the document: {result.err()}")
            continue
        op = result.ok()
        tested += 1
        problems = _fuzz(op, fuzz_cloud.base_url, headers)
        if problems:
            failures.append(f"{op.method.upper()} {op.path}:\n" + "\n".join(problems))
    print(f"\nschemathesis: {tested} operations, up to {EXAMPLES} examples each")
    assert tested > 60, tested
    assert not failures, "\n\n".join(failures)


def _homogeneous_tuples_as_arrays(node: Any) -> Any:
    """schemathesis 4 rejects OpenAPI 3.1 `prefixItems` (it reads them as draft-4 `items`
    lists). Pydantic writes them for tuple[float, float]; the same constraint, restated
    as items + minItems/maxItems (which pydantic also writes), is what it can read."""
    if isinstance(node, list):
        return [_homogeneous_tuples_as_arrays(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _homogeneous_tuples_as_arrays(v) for k, v in node.items()}
    prefix = out.get("prefixItems")
    if prefix and all(p == prefix[0] for p in prefix) and "items" not in out:
        del out["prefixItems"]
        out |= {"items": prefix[0], "minItems": len(prefix), "maxItems": len(prefix)}
    return out


def _fuzz(op: Any, base_url: str, headers: dict[str, str]) -> list[str]:
    """Up to three failures of one operation (each check failure is kept, the run goes on)."""
    problems: list[str] = []

    @given(case=op.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # collect, do not shrink: bounded time
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        try:
            case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS, timeout=30)
        except (Exception, BaseExceptionGroup) as e:  # schemathesis: FailureGroup
            if len(problems) < 3:
                problems.append(_describe(case, e))

    run()
    return problems


def _describe(case: Any, e: BaseException) -> str:
    try:
        curl = case.as_curl_command(headers={"Authorization": "Bearer <key>"})
    except Exception:
        curl = f"{case.method} {case.formatted_path}"
    text = "".join(traceback.format_exception_only(type(e), e)).strip()
    return f"  {curl}\n    {text[:1500]}"
