"""``fleet-agent provision``: commission this unit with a claim token.

1. Keep (or create) the unit's install id in the state directory, so that a
   re-run of the same command is recognised by the cloud as the same unit.
2. Redeem the token at ``POST {cloud}/api/v1/provision`` (stdlib urllib: the
   agent carries no HTTP client library): device id, broker credentials, CA,
   config public key, initial config.
3. Write ``ca.pem`` and ``config.toml`` with mode 0600 (temp file, fsync,
   rename, directory fsync), owned by the agent's user when run as root.
4. Install the systemd unit and, when systemd runs, reload, enable and
   (re)start it; a re-run thus restarts the agent on its new credentials.
5. The caller then runs the doctor on the written config.

Each failure is a ProvisionError whose message is one line for the installer.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from fleet_edge import __version__
from fleet_edge.config import AgentConfig, ConfigError, load_config

UNIT_NAME = "fleet-agent.service"
# Defaults written in fleet_edge/systemd/fleet-agent.service, replaced when installing it.
UNIT_DEFAULTS = {
    "exe": "/usr/local/bin/fleet-agent",
    "config_dir": "/etc/fleet-agent",
    "state_dir": "/var/lib/fleet-agent",
    "user": "fleet-agent",
}
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/@+-]*$")  # nothing systemd would need quoted
_INSTALL_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
# Tables of an existing config.toml that are the unit's own wiring: a re-run
# without --gps-port/--obd-port keeps them instead of resetting them.
LOCAL_TABLES = ("gps", "obd")

Echo = Callable[[str], None]


class ProvisionError(RuntimeError):
    """Provisioning cannot go on; the message is one line for the installer."""


@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int
    name: str


# -- install id -------------------------------------------------------------------


def install_id(state_dir: Path, owner: Owner | None) -> str:
    """This unit's install id: read from the state directory, or made and kept there."""
    path = state_dir / "install_id"
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        value = ""
    except OSError as e:
        raise ProvisionError(f"cannot read {path}: {e.strerror}") from None
    if _INSTALL_ID.match(value):
        return value
    value = secrets.token_urlsafe(24)
    write_private(path, (value + "\n").encode(), owner)
    return value


# -- files --------------------------------------------------------------------------


def make_dir(path: Path, owner: Owner | None) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        if owner is not None:
            os.chown(path, owner.uid, owner.gid)
            os.chmod(path, 0o700)
    except OSError as e:
        raise ProvisionError(f"cannot create {path}: {_why(e)}") from None


def write_private(path: Path, data: bytes, owner: Owner | None, mode: int = 0o600) -> None:
    """Replace ``path`` atomically: a crash leaves the old file or the new one, whole."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            os.fchmod(fd, mode)  # whatever the umask
            if owner is not None:
                os.fchown(fd, owner.uid, owner.gid)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)  # the rename itself survives a power cut
        finally:
            os.close(dfd)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ProvisionError(f"cannot write {path}: {_why(e)}") from None


def _why(e: OSError) -> str:
    why = e.strerror or str(e)
    if e.errno in (1, 13):  # EPERM, EACCES
        why += " (run as root, or choose other directories)"
    return why


# -- the claim ------------------------------------------------------------------------


def redeem(
    cloud: str,
    token: str,
    install: str,
    *,
    cloud_ca: Path | None = None,
    timeout_s: float = 30.0,
) -> dict[str, Any]:
    """POST the token to the cloud; the provisioning document, or ProvisionError."""
    parts = urlsplit(cloud)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProvisionError(f"--cloud {cloud!r}: expected a URL such as https://fleet.example.com")
    url = cloud.rstrip("/") + "/api/v1/provision"
    body = json.dumps(
        {
            "token": token.strip(),
            "install_id": install,
            "hostname": socket.gethostname()[:253],
            "agent_version": __version__,
        }
    ).encode()
    req = urllib.request.Request(
        url, body, {"content-type": "application/json", "accept": "application/json"}, method="POST"
    )
    context = None
    if parts.scheme == "https":
        try:
            context = ssl.create_default_context(cafile=str(cloud_ca) if cloud_ca else None)
        except (OSError, ssl.SSLError) as e:
            raise ProvisionError(f"--cloud-ca {cloud_ca}: {e}") from None
    try:
        with urllib.request.urlopen(req, timeout=timeout_s, context=context) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as e:
        raise ProvisionError(_refusal(e)) from None
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise ProvisionError(
                f"TLS error with {parts.hostname}: {reason.verify_message or reason} "
                "(if the cloud uses a private CA, pass --cloud-ca FILE)"
            ) from None
        if isinstance(reason, ssl.SSLError):
            raise ProvisionError(f"TLS error with {parts.hostname}: {reason}") from None
        raise ProvisionError(f"cannot reach the cloud at {cloud}: {_reason(reason)}") from None
    except ssl.SSLError as e:
        raise ProvisionError(f"TLS error with {parts.hostname}: {e}") from None
    except (TimeoutError, OSError) as e:
        raise ProvisionError(f"cannot reach the cloud at {cloud}: {_reason(e)}") from None
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or not {"device_id", "mqtt", "config"} <= set(doc):
            raise ValueError("missing fields")
    except ValueError:
        raise ProvisionError(
            f"{url} answered something that is not a provisioning document"
        ) from None
    return doc


def _reason(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason) or type(reason).__name__


def _refusal(e: urllib.error.HTTPError) -> str:
    """The cloud's own one-line message for a refused claim."""
    try:
        message = str(json.loads(e.read())["error"]["message"])
    except (ValueError, KeyError, TypeError, OSError):
        message = f"HTTP {e.code} {e.reason}"
    if e.code == 429:
        return f"the cloud refuses for now: {message}"
    if e.code in (404, 409, 410):
        return f"claim refused: {message}"
    return f"provisioning failed (HTTP {e.code}): {message}"


# -- the config -------------------------------------------------------------------------


def build_config(
    doc: dict[str, Any],
    *,
    config_dir: Path,
    state_dir: Path,
    existing: dict[str, Any],
    gps_port: Path | None,
    obd_port: Path | None,
) -> dict[str, Any]:
    """The agent's config: the cloud's initial config plus this unit's paths and ports."""
    cfg: dict[str, Any] = json.loads(json.dumps(doc["config"]))  # a deep copy
    cfg["device_id"] = doc["device_id"]
    broker = cfg.setdefault("broker", {})
    broker["password"] = doc["mqtt"]["password"]
    if broker.get("tls"):
        broker["ca_file"] = str(config_dir / "ca.pem")
    cfg.setdefault("remote", {})["state_dir"] = str(state_dir)
    cfg["outbox"] = {**existing.get("outbox", {}), "path": str(state_dir / "outbox.db")}
    for table in LOCAL_TABLES:
        if table in existing:
            cfg[table] = existing[table]
    if gps_port is not None:
        cfg["gps"] = {**cfg.get("gps", {}), "source": "serial", "port": str(gps_port)}
    if obd_port is not None:
        cfg["obd"] = {**cfg.get("obd", {}), "enabled": True, "port": str(obd_port)}
    return cfg


def read_existing(path: Path) -> dict[str, Any]:
    """The current config.toml's tables, or {} (none yet, or unreadable: replaced)."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def to_toml(doc: dict[str, Any]) -> str:
    """TOML for the agent's config shape: top-level keys, then one level of tables."""
    head = [f"{k} = {_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    lines = ["# Written by `fleet-agent provision`; see docs/provisioning.md.", *head]
    for name, table in doc.items():
        if isinstance(table, dict):
            lines += ["", f"[{name}]"] + [f"{k} = {_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str | Path):
        return json.dumps(str(v))  # a JSON string is a valid TOML basic string
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise ProvisionError(f"cannot write {v!r} to the config")


def validated(text: str) -> AgentConfig:
    """The written text, read back through the agent's own config model."""
    try:
        return AgentConfig.model_validate(tomllib.loads(text))
    except tomllib.TOMLDecodeError as e:
        raise ProvisionError(f"internal error: generated TOML does not parse: {e}") from None
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise ProvisionError(
            f"the cloud's initial config is not valid here: {where}: {first['msg']}"
        ) from None


# -- user and systemd --------------------------------------------------------------------


def resolve_owner(user: str, echo: Echo) -> Owner | None:
    """Who the files should belong to; None when not root (they stay the caller's)."""
    if os.geteuid() != 0:
        if user != pwd.getpwuid(os.geteuid()).pw_name:
            echo(f"not root: files stay owned by {pwd.getpwuid(os.geteuid()).pw_name}, not {user}")
        return None
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        pw = _create_user(user, echo)
    with contextlib.suppress(KeyError):
        if (
            user not in grp.getgrnam("dialout").gr_mem
            and pw.pw_gid != grp.getgrnam("dialout").gr_gid
        ):
            echo(f"warning: user {user} is not in group dialout: it cannot open serial ports")
    return Owner(pw.pw_uid, pw.pw_gid, user)


def _create_user(user: str, echo: Echo) -> pwd.struct_passwd:
    sysusers = shutil.which("systemd-sysusers")
    if user != UNIT_DEFAULTS["user"] or sysusers is None:
        raise ProvisionError(
            f"user {user} does not exist: create it (useradd --system --groups dialout "
            f"--shell /usr/sbin/nologin {user}) or pick another with --user"
        )
    conf = resources.files("fleet_edge") / "systemd" / "fleet-agent.sysusers.conf"
    with resources.as_file(conf) as path:
        r = subprocess.run([sysusers, str(path)], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise ProvisionError(f"systemd-sysusers failed: {_first_line(r.stderr or r.stdout)}")
    echo(f"created system user {user} (group dialout) with systemd-sysusers")
    return pwd.getpwnam(user)


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else "(no message)"


def agent_executable() -> str:
    """Absolute path of the fleet-agent command running now (what the unit should start)."""
    argv0 = os.path.abspath(sys.argv[0])
    if os.path.basename(argv0) == "fleet-agent" and os.access(argv0, os.X_OK):
        return argv0
    return shutil.which("fleet-agent") or UNIT_DEFAULTS["exe"]


def render_unit(template: str, *, exe: str, config_dir: Path, state_dir: Path, user: str) -> str:
    """The shipped unit with this installation's command, user and paths."""
    for p in (exe, str(config_dir), str(state_dir)):
        if not _SAFE_PATH.match(p):
            raise ProvisionError(f"{p}: paths in the systemd unit may not contain spaces or quotes")
    out = []
    for line in template.splitlines():
        key = line.split("=", 1)[0]
        if key == "ExecStart":
            line = f"ExecStart={exe} run --config {config_dir / 'config.toml'}"
        elif key in ("User", "Group"):
            line = f"{key}={user}"
        elif key == "ReadWritePaths":
            line = f"ReadWritePaths={state_dir} {config_dir}"
        out.append(line)
    return "\n".join(out) + "\n"


def systemd_running() -> bool:
    """sd_booted(3): systemd is PID 1 and manages this machine."""
    return os.path.isdir("/run/systemd/system")


def install_unit(
    unit_dir: Path, *, config_dir: Path, state_dir: Path, user: str, echo: Echo
) -> None:
    try:
        template = (resources.files("fleet_edge") / "systemd" / UNIT_NAME).read_text()
    except OSError:
        raise ProvisionError(
            f"this installation of fleet-agent lacks its {UNIT_NAME}: reinstall the package, "
            "or use --no-systemd"
        ) from None
    text = render_unit(
        template, exe=agent_executable(), config_dir=config_dir, state_dir=state_dir, user=user
    )
    unit = unit_dir / UNIT_NAME
    if user in ("root", "nobody"):
        echo(f"warning: the unit runs the agent as {user}; give it its own user (--user)")
    if not unit_dir.is_dir():
        make_dir(unit_dir, None)
    write_private(unit, text.encode(), None, mode=0o644)
    if not systemd_running():
        echo(f"systemd: unit written to {unit}; systemd is not running here, so it was not "
             "enabled or started")  # fmt: skip
        return
    for args in (["daemon-reload"], ["enable", UNIT_NAME], ["restart", UNIT_NAME]):
        r = subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=90)
        if r.returncode != 0:
            raise ProvisionError(
                f"systemctl {' '.join(args)} failed: {_first_line(r.stderr or r.stdout)}"
            )
    echo(f"systemd: {unit} installed, enabled and (re)started")


# -- the whole flow ----------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    cloud: str
    token: str
    config_dir: Path
    state_dir: Path
    user: str
    unit_dir: Path
    systemd: bool
    gps_port: Path | None = None
    obd_port: Path | None = None
    cloud_ca: Path | None = None


def provision(req: Request, echo: Echo) -> Path:
    """Everything but the doctor; returns the written config file's path."""
    config_dir, state_dir = req.config_dir.absolute(), req.state_dir.absolute()
    owner = resolve_owner(req.user, echo)
    # Directories and the install id first: a unit that cannot keep its files
    # must fail before it uses up the token.
    make_dir(state_dir, owner)
    make_dir(config_dir, owner)
    install = install_id(state_dir, owner)
    if urlsplit(req.cloud).scheme == "http" and urlsplit(req.cloud).hostname not in (
        "localhost", "127.0.0.1", "::1",
    ):  # fmt: skip
        echo("warning: plain http: the token and the credentials cross the network unencrypted")
    doc = redeem(req.cloud, req.token, install, cloud_ca=req.cloud_ca)
    mqtt = doc["mqtt"]
    echo(
        f"claimed: device {doc['device_id']} for vehicle {doc.get('vehicle_name')!r} "
        f"(install id {install})"
    )
    config_path = config_dir / "config.toml"
    cfg = build_config(
        doc,
        config_dir=config_dir,
        state_dir=state_dir,
        existing=read_existing(config_path),
        gps_port=req.gps_port,
        obd_port=req.obd_port,
    )
    text = to_toml(cfg)
    agent_cfg = validated(text)
    if cfg["broker"].get("tls"):
        if not mqtt.get("ca_pem"):
            raise ProvisionError("the cloud asks for TLS but sent no CA certificate")
        write_private(config_dir / "ca.pem", mqtt["ca_pem"].encode(), owner)
        echo(f"broker: {agent_cfg.broker.host}:{agent_cfg.broker.port} over TLS "
             f"(CA in {config_dir / 'ca.pem'})")  # fmt: skip
    else:
        echo(f"broker: {agent_cfg.broker.host}:{agent_cfg.broker.port} without TLS "
             "(the cloud offers no TLS listener)")  # fmt: skip
    if doc.get("config_public_key") is None:
        echo("warning: the cloud has no config signing key: remote config will be refused")
    write_private(config_path, text.encode(), owner)
    who = owner.name if owner else pwd.getpwuid(os.geteuid()).pw_name
    echo(f"wrote {config_path} (mode 0600, owner {who})")
    if req.systemd:
        install_unit(
            req.unit_dir, config_dir=config_dir, state_dir=state_dir, user=req.user, echo=echo
        )
    else:
        echo("systemd: skipped (--no-systemd)")
    return config_path


def load_written(path: Path) -> AgentConfig:
    try:
        return load_config(path)
    except ConfigError as e:
        raise ProvisionError(str(e)) from None
