"""What the agent must remember about remote config and commands across restarts.

Two files in ``remote.state_dir``, each written whole with ``atomic_write``:

- ``remote-config.json`` (:class:`ConfigState`): the highest version ever
  applied (a retained re-delivery of it is a no-op, anything older is refused),
  the document in force and whether it passed probation, the last known good
  document, and the applied/reverted reports the cloud has not acknowledged yet.
- ``commands.json`` (:class:`CommandLog`): recent command ids with their
  results, so a re-delivered command runs once and its result can be sent again.

A file that cannot be parsed (it can only be damaged storage: writes are
atomic) is moved aside and the agent starts from its local config file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fleet_edge.remote.durable import atomic_write, read_file
from fleet_wire.remote import CommandResult, ConfigDocument, ConfigReport

log = logging.getLogger(__name__)

CONFIG_STATE_FILE = "remote-config.json"
COMMAND_LOG_FILE = "commands.json"
# Command ids remembered; the cloud sends a few commands a day at most.
MAX_COMMAND_IDS = 200
# An id is forgotten this long after its command expired: a duplicate that
# late would be refused as expired anyway.
KEEP_AFTER_EXPIRY_MS = 24 * 3600 * 1000

M = TypeVar("M", bound=BaseModel)


class _State(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConfigState(_State):
    format: Literal[1] = 1
    # Highest version ever applied, reverted ones included: never applied again.
    max_version: Annotated[int, Field(ge=0)] = 0
    max_sig: str | None = None  # its signature: tells a re-delivery from a conflicting document
    active: ConfigDocument | None = None  # in force (None: the local config file only)
    committed: bool = True  # False while ``active`` is on probation
    good: ConfigDocument | None = None  # last known good (None: the local config file)
    reports: list[ConfigReport] = []  # applied/reverted reports not yet PUBACKed

    @property
    def active_version(self) -> int:
        return self.active.version if self.active is not None else 0


class CommandEntry(_State):
    expires_at: int
    result: CommandResult | None = None  # None: interrupted before it finished
    sent: bool = False  # the result was PUBACKed


class CommandLog(_State):
    format: Literal[1] = 1
    commands: dict[str, CommandEntry] = {}  # by id, oldest first

    def prune(self, now_ms: int) -> None:
        keep = {
            cid: e
            for cid, e in self.commands.items()
            if e.expires_at + KEEP_AFTER_EXPIRY_MS > now_ms or not e.sent
        }
        while len(keep) > MAX_COMMAND_IDS:
            del keep[next(iter(keep))]
        self.commands = keep


def load(path: Path, model: type[M]) -> M:
    """The state in ``path``; a fresh one when absent or unreadable (moved aside)."""
    try:
        data = read_file(path)
    except OSError as e:
        log.error("cannot read %s (%s); starting from the local config", path, e.strerror)
        return model()
    if data is None:
        return model()
    try:
        return model.model_validate(orjson.loads(data))
    except (orjson.JSONDecodeError, ValidationError) as e:
        aside = path.with_name(path.name + ".damaged")
        log.error("%s is damaged (%s); moved to %s", path, str(e)[:200], aside)
        try:
            path.replace(aside)
        except OSError:
            pass
        return model()


def save(path: Path, state: BaseModel) -> None:
    """Write durably (blocking: run it in a worker thread); raises OSError."""
    atomic_write(path, orjson.dumps(state.model_dump(mode="json"), option=orjson.OPT_INDENT_2))
