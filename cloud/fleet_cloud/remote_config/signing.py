"""The cloud's config signing key: a 32-byte raw Ed25519 seed in a 0600 file.

Raw bytes rather than PEM because the agent's trust anchor is the matching
raw public key in base64 (fleet_wire.remote.public_key_b64): one format, no
parser, nothing to misconfigure. The file is named by the setting
``config_signing_key_file`` (FLEET_CONFIG_SIGNING_KEY_FILE).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from fleet_cloud.settings import Settings
from fleet_wire.remote import public_key_b64

SEED_BYTES = 32


class SigningKeyError(RuntimeError):
    """No usable signing key; the message says what to do, in one line."""


def read_key_file(path: Path) -> bytes:
    try:
        seed = path.read_bytes()
    except FileNotFoundError:
        raise SigningKeyError(
            f"config signing key {path} does not exist: create it with `fleet-cloud config-keygen`"
        ) from None
    except OSError as e:
        raise SigningKeyError(f"config signing key {path}: {e.strerror}") from None
    if len(seed) != SEED_BYTES:
        raise SigningKeyError(
            f"config signing key {path}: expected {SEED_BYTES} raw bytes, found {len(seed)}"
        )
    return seed


def load_signing_key(settings: Settings) -> bytes:
    """The 32-byte seed named by ``config_signing_key_file``; SigningKeyError otherwise."""
    if settings.config_signing_key_file is None:
        raise SigningKeyError(
            "no config signing key: set FLEET_CONFIG_SIGNING_KEY_FILE "
            "(create the key with `fleet-cloud config-keygen`)"
        )
    return read_key_file(settings.config_signing_key_file)


def config_public_key(settings: Settings) -> str:
    """Base64 raw public key that devices verify configs with (given at provisioning)."""
    return public_key_b64(load_signing_key(settings))


def write_new_key(path: Path, overwrite: bool = False) -> str:
    """Create a fresh seed file (mode 0600 from its creation on); return its public key.

    Refuses to replace an existing key unless told to: every device trusts the
    old public key, and a new one makes them reject all configs until they are
    re-provisioned.
    """
    seed = secrets.token_bytes(SEED_BYTES)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise SigningKeyError(
            f"{path} already exists (devices trust its public key); pass --force to replace it"
        ) from None
    with os.fdopen(fd, "wb") as f:
        f.write(seed)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, 0o600)  # O_TRUNC on an existing file keeps its old mode
    return public_key_b64(seed)
