"""A private PostgreSQL cluster for tests that stop the database.

The machine's shared PostgreSQL serves every other test (and other people):
a test that takes the database away must take away its own. ``initdb`` into a
temporary directory, run as the ``postgres`` OS user (the server refuses to
run as root), listening only on a Unix socket in that directory.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
OS_USER = "postgres"


def _as_postgres(*argv: str, timeout: float = 60) -> None:
    subprocess.run(
        ["runuser", "-u", OS_USER, "--", *argv],
        check=True,
        timeout=timeout,
        capture_output=True,
    )


@dataclass
class PgCluster:
    port: int = field(default_factory=free_port)
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fleet-pg-")))

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{OS_USER}@/{dbname}?host={self.socket_dir}&port={self.port}"

    def init(self) -> PgCluster:
        self.base.chmod(0o755)
        shutil.chown(self.base, OS_USER, OS_USER)
        # trust: only local socket connections exist, inside a 0755 temp directory.
        _as_postgres(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", OS_USER,
                     "--no-sync", "-E", "UTF8")  # fmt: skip
        return self

    def start(self) -> PgCluster:
        opts = f"-p {self.port} -k {self.socket_dir} -c listen_addresses=''"
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "pg.log"),
                     "-o", opts, "-w", "-t", "60", "start")  # fmt: skip
        return self

    def stop(self, mode: str = "immediate") -> None:
        """``immediate`` is a crash as far as clients see it (recovery runs on start)."""
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # not running
        shutil.rmtree(self.base, ignore_errors=True)

    def create_database(self, name: str) -> str:
        from tests.harness import db_fetch

        db_fetch(self.dsn(), f'CREATE DATABASE "{name}"')
        return self.dsn(name)
