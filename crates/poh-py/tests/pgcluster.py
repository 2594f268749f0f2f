"""A throwaway PostgreSQL cluster for the tests: ``initdb`` into a temporary directory and
``pg_ctl`` on a free loopback port, from the machine's own server binaries (as the Rust
tests' ``poh_testkit::pg`` does). Without the binaries the tests skip with a note; under
``POH_REQUIRE_ALL=1`` they fail."""
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
from typing import List, Optional

import pytest

USER = "poh"


def find_bin() -> Optional[pathlib.Path]:
    """The directory holding initdb, pg_ctl and postgres: $POH_PG_BIN, ``pg_config
    --bindir``, else the newest /usr/lib/postgresql/*/bin."""
    def has_all(d: pathlib.Path) -> bool:
        return all((d / b).is_file() for b in ("initdb", "pg_ctl", "postgres", "psql"))

    env = os.environ.get("POH_PG_BIN")
    if env:
        return pathlib.Path(env) if has_all(pathlib.Path(env)) else None
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        d = pathlib.Path(out.stdout.strip())
        if out.returncode == 0 and has_all(d):
            return d
    root = pathlib.Path("/usr/lib/postgresql")
    found = sorted((p / "bin" for p in root.iterdir()), key=lambda p: p.parent.name) \
        if root.is_dir() else []
    for d in reversed(found):
        if has_all(d):
            return d
    return None


def require_postgres() -> pathlib.Path:
    """The binaries' directory, or skip (fail with POH_REQUIRE_ALL=1) saying what is missing."""
    d = find_bin()
    if d is None:
        why = ("PostgreSQL server binaries (initdb, pg_ctl): install Debian's `postgresql` "
               "package, or set POH_PG_BIN")
        if os.environ.get("POH_REQUIRE_ALL") == "1":
            pytest.fail(f"needs {why} (POH_REQUIRE_ALL=1)")
        pytest.skip(f"needs {why}")
    assert d is not None
    return d


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A running server; :meth:`stop` stops it and removes its directory."""

    def __init__(self, bin_dir: pathlib.Path) -> None:
        self.bin = bin_dir
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="poh-pg-"))
        self.run_as: Optional[str] = None
        if os.geteuid() == 0:  # the server refuses to run as root
            for user in ("postgres", "nobody"):
                if subprocess.run(["id", "-u", user], capture_output=True).returncode == 0:
                    self.run_as = user
                    break
            else:
                raise RuntimeError("running as root and there is no postgres or nobody user")
            subprocess.run(["chown", "-R", f"{self.run_as}:", str(self.dir)], check=True)
        self.data = self.dir / "data"
        self._run("initdb", "-D", str(self.data), "-U", USER, "-E", "UTF8", "--locale=C",
                  "--no-sync", "--auth-local=trust", "--auth-host=trust")
        last = ""
        for _ in range(5):
            self.port = _free_port()
            opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                    "-c max_connections=100")
            r = self._cmd("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"),
                          "-w", "-t", "60", "-o", opts, "start")
            if r.returncode == 0:
                return
            last = r.stdout + r.stderr
        raise RuntimeError(f"pg_ctl start failed: {last}")

    def _cmd(self, program: str, *args: str) -> subprocess.CompletedProcess:
        argv: List[str] = [str(self.bin / program), *args]
        if self.run_as:
            argv = ["runuser", "-u", self.run_as, "--", *argv]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)

    def _run(self, program: str, *args: str) -> str:
        r = self._cmd(program, *args)
        if r.returncode != 0:
            raise RuntimeError(f"{program} failed ({r.returncode}): {r.stdout}{r.stderr}")
        return r.stdout

    def psql(self, db: str, sql: str) -> str:
        return self._run("psql", "-h", str(self.dir), "-p", str(self.port), "-U", USER,
                         "-d", db, "-v", "ON_ERROR_STOP=1", "-X", "-A", "-t", "-c", sql).strip()

    def create_db(self, name: str) -> str:
        """Creates database ``name``; returns its URL."""
        self.psql("postgres", f'CREATE DATABASE "{name}"')
        return f"postgres://{USER}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self._cmd("pg_ctl", "-D", str(self.data), "-w", "-m", "immediate", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)
