"""The prototype's surface: module layout, names, the Tx dataclass, which methods are
coroutines, and the hash helper."""
import dataclasses
import importlib
import inspect

import pytest

import poh_storage
import poh_ttl
from poh_storage.file_store import FileStore
from poh_storage.hash_utils import sha256_hex
from poh_storage.recovery import perform_recovery
from poh_storage.sqlite_store import SQLiteStore
from poh_storage.storage import StorageManager
from poh_storage.types import Tx
from poh_ttl.exceptions import TTLManagerError
from poh_ttl.manager import TTLManager


@pytest.mark.parametrize("module", [
    "poh_storage", "poh_storage.types", "poh_storage.tx", "poh_storage.storage",
    "poh_storage.file_store", "poh_storage.sqlite_store", "poh_storage.hash_utils",
    "poh_storage.recovery", "poh_storage.app_storage", "poh_ttl", "poh_ttl.manager",
    "poh_ttl.exceptions", "poh_ttl.cli",
])
def test_every_prototype_module_imports(module):
    assert importlib.import_module(module).__name__ == module


def test_package_exports():
    assert poh_storage.StorageManager is StorageManager
    assert isinstance(poh_storage.__version__, str) and poh_storage.__version__
    assert poh_storage.Tx is Tx
    assert issubclass(poh_storage.IntegrityError, ValueError)
    assert poh_ttl.TTLManager is TTLManager
    assert poh_ttl.TTLManagerError is TTLManagerError


def test_tx_is_the_same_mutable_dataclass_everywhere():
    from poh_storage.tx import Tx as Tx2
    assert Tx2 is Tx
    assert dataclasses.is_dataclass(Tx)
    assert [f.name for f in dataclasses.fields(Tx)] == ["tx_id", "holder_id", "timestamp", "payload"]
    tx = Tx(tx_id="a", holder_id="h", timestamp=1.5, payload=b"x")
    assert repr(tx) == "Tx(tx_id='a', holder_id='h', timestamp=1.5, payload=b'x')"
    assert tx == Tx("a", "h", 1.5, b"x")
    assert tx != Tx("a", "h", 1.5, b"y")
    tx.payload = b"changed"
    tx.holder_id = "other"
    assert tx.__dict__ == {"tx_id": "a", "holder_id": "other", "timestamp": 1.5, "payload": b"changed"}


@pytest.mark.parametrize("fn", [
    StorageManager.create, StorageManager.save_tx, StorageManager.load_tx,
    StorageManager.delete_tx, StorageManager.list_txs, StorageManager.recover,
    StorageManager.close, FileStore.save, FileStore.load, FileStore.exists, FileStore.remove,
    FileStore.list_keys, SQLiteStore.init, SQLiteStore.save, SQLiteStore.load,
    SQLiteStore.remove, SQLiteStore.list_ids, SQLiteStore.close, perform_recovery,
    TTLManager.scan_once, TTLManager.stop,
], ids=lambda f: f.__qualname__)
def test_async_methods_are_coroutine_functions(fn):
    assert inspect.iscoroutinefunction(fn)


def test_ttl_run_is_a_plain_function():
    assert not inspect.iscoroutinefunction(TTLManager.run)


def test_sha256_hex():
    assert sha256_hex(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert sha256_hex(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    big = bytes(range(256)) * 4096
    import hashlib
    assert sha256_hex(big) == hashlib.sha256(big).hexdigest()
    assert sha256_hex(bytearray(b"abc")) == sha256_hex(b"abc")


def test_typed_package():
    import pathlib
    for pkg in (poh_storage, poh_ttl):
        assert (pathlib.Path(pkg.__file__).parent / "py.typed").is_file()
    assert (pathlib.Path(poh_storage.__file__).parent / "_native.pyi").is_file()
