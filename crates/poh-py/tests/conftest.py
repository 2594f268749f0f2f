"""Shared fixtures: a store laid out the way callers lay it out (under tmp_path, the
database inside the base directory), and where the prototype's model lives."""
import os
import pathlib
import subprocess
import sys
from typing import List, Optional, Tuple

import pytest
import pytest_asyncio

from poh_storage import StorageManager

REPO = pathlib.Path(__file__).resolve().parents[3]


def seedref_dir() -> Optional[pathlib.Path]:
    """The prototype's Python model: $POH_SEEDREF, else ../shared/seedref beside the repo."""
    env = os.environ.get("POH_SEEDREF")
    d = pathlib.Path(env) if env else REPO.parent / "shared" / "seedref"
    return d if (d / "poh_storage" / "storage.py").is_file() else None


def require_seedref() -> pathlib.Path:
    """The model's directory, or skip (fail with POH_REQUIRE_ALL=1) saying what is missing."""
    d = seedref_dir()
    why = None
    if d is None:
        why = "the prototype's model (../shared/seedref or $POH_SEEDREF)"
    else:
        try:
            import aiofiles  # noqa: F401
            import aiosqlite  # noqa: F401
        except ImportError:
            why = "aiofiles and aiosqlite (pip install aiofiles aiosqlite) for the prototype's model"
    if why:
        if os.environ.get("POH_REQUIRE_ALL") == "1":
            pytest.fail(f"needs {why} (POH_REQUIRE_ALL=1)")
        pytest.skip(f"needs {why}")
    assert d is not None
    return d


@pytest.fixture(autouse=True)
def _layout_unset(monkeypatch):
    """New stores are flat-file ones unless a test says otherwise, whatever the caller's
    environment names (POH_LAYOUT, POH_SEGMENT_WINDOW), for subprocesses too."""
    monkeypatch.delenv("POH_LAYOUT", raising=False)
    monkeypatch.delenv("POH_SEGMENT_WINDOW", raising=False)


@pytest.fixture
def paths(tmp_path: pathlib.Path) -> Tuple[pathlib.Path, pathlib.Path]:
    base = tmp_path / "data"
    return base, base / "poh.db"


@pytest_asyncio.fixture
async def manager(paths):
    base, db = paths
    m = await StorageManager.create(str(base), str(db))
    try:
        yield m
    finally:
        await m.close()


def run_module(module: str, *args: str, env: Optional[dict] = None, cwd: Optional[str] = None,
               timeout: float = 60) -> Tuple[int, str, str]:
    """``python -m module args`` as callers run it; (exit code, stdout, stderr)."""
    r = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                       env=env, cwd=cwd, timeout=timeout)
    return r.returncode, r.stdout, r.stderr


def run_script(code: str, timeout: float = 60, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, env=env)


def listing(base: pathlib.Path) -> List[str]:
    return sorted(p.name for p in base.iterdir())
