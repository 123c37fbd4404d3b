"""Which keys a layer may set and which values they may take.

Keys: fleet_wire.remote.REMOTE_KEYS, nothing else. Values: the agent's own
config model (fleet_edge.config.AgentConfig, pure pydantic, installed with
every part of this project), so the cloud refuses exactly what an agent would
refuse for the same keys instead of keeping a second copy of the rules that
drifts. Values come back normalised the way the model reads them ("5" for a
float key is stored as 5.0), so what is signed is what the agent will apply.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from fleet_edge.config import AgentConfig
from fleet_wire.remote import REMOTE_KEYS

# A syntactically valid id: the check runs on the overlay, not on a real unit.
_PLACEHOLDER_ID = "config-check"


class ConfigValueError(ValueError):
    """A layer or resolved document the agent would refuse; ``key`` names the culprit."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def parse_cli_value(text: str) -> Any:
    """``--set key=VALUE``: JSON when it parses (5, true, ["rpm"]), else the string itself."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for dotted, value in flat.items():
        *sections, key = dotted.split(".")
        node = doc
        for name in sections:
            node = node.setdefault(name, {})
        node[key] = value
    return doc


def _pick(doc: dict[str, Any], dotted: str) -> Any:
    node: Any = doc
    for part in dotted.split("."):
        node = node[part]
    return node


def validate_document(flat: dict[str, Any]) -> dict[str, Any]:
    """The document with its values normalised; ConfigValueError on the first problem."""
    for key in sorted(flat):
        if key not in REMOTE_KEYS:
            raise ConfigValueError(key, "not a remotely settable key (see REMOTE_KEYS)")
    try:
        model = AgentConfig.model_validate({**_nest(flat), "device_id": _PLACEHOLDER_ID})
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise ConfigValueError(where, str(first["msg"])) from None
    dumped = model.model_dump(mode="json")
    return {key: _pick(dumped, key) for key in flat}
