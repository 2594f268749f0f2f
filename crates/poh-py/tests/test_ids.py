"""Ids: any non-empty string of at most 255 UTF-8 bytes without control characters.
Safe ids keep the prototype's file name; others are escaped reversibly and stay inside
the base; listing returns the original ids."""
import os
import shutil

import pytest

from poh_storage import StorageManager, Tx
from poh_storage._native import file_stem, from_file_stem
from poh_storage.file_store import FileStore

from conftest import REPO, listing


ODD_IDS = [
    "('127.0.0.1', 5)",
    "('::1', 8080, 0, 0)",
    "../x",
    "a/b",
    "/etc/passwd",
    "..",
    ".hidden",
    ".poh.lock",
    "é ü 雪 🙂",
    "~tilde",
    "%41",
    "x" * 129,
]


@pytest.mark.asyncio
async def test_network_addresses_and_path_like_ids_round_trip(manager, paths, tmp_path):
    base, _ = paths
    for i, tx_id in enumerate(ODD_IDS):
        await manager.save_tx(Tx(tx_id=tx_id, holder_id="h", timestamp=float(i), payload=tx_id.encode()))
    assert sorted(await manager.list_txs()) == sorted(ODD_IDS)
    for tx_id in ODD_IDS:
        tx = await manager.load_tx(tx_id)
        assert tx is not None and tx.tx_id == tx_id and tx.payload == tx_id.encode()
    # every payload is a plain file directly inside the base, none outside it
    names = [n for n in listing(base) if n.endswith(".bin")]
    assert len(names) == len(ODD_IDS)
    assert all(n.startswith("~") and "/" not in n for n in names)
    assert sorted(n for n in listing(tmp_path)) == ["data"]
    assert not (base.parent / "x.bin").exists()
    assert sorted(await manager.file_store.list_keys()) == sorted(ODD_IDS)
    assert await manager.recover() == sorted(await manager.list_txs())
    for tx_id in ODD_IDS:
        await manager.delete_tx(tx_id)
    assert await manager.list_txs() == []


@pytest.mark.asyncio
async def test_safe_ids_keep_the_prototypes_file_name(manager, paths):
    base, _ = paths
    for tx_id in ["tx-1", "A_b.c-9", "x" * 128, "3f2a"]:
        await manager.save_tx(Tx(tx_id, "h", 1.0, b"p"))
        assert (base / f"{tx_id}.bin").read_bytes() == b"p"


def test_the_mapping():
    assert file_stem("tx-1") == "tx-1"
    assert file_stem("('127.0.0.1', 5)") == "~%28%27127.0.0.1%27%2C%205%29"
    assert file_stem("../x") == "~..%2Fx"
    assert from_file_stem("~..%2Fx") == "../x"
    assert from_file_stem("tx-1") == "tx-1"
    for not_ours in [".tmp", "~abc", "~..%2fx", "~%61", "a b", ""]:
        assert from_file_stem(not_ours) is None, not_ours
    with pytest.raises(ValueError):
        file_stem("a\x00b")
    with pytest.raises(ValueError):
        file_stem("x" * 256)


@pytest.mark.asyncio
async def test_limits(manager):
    longest_safe_chars = "y" * 218  # "~" + 218 bytes: the longest stem that fits every name
    await manager.save_tx(Tx(longest_safe_chars, "h", 1.0, b"p"))
    assert (await manager.load_tx(longest_safe_chars)).payload == b"p"
    for bad in ["", "a\nb", "tab\there", "nul\x00", "esc\x1b[0m", "del\x7f", "c1\x85", "z" * 256]:
        with pytest.raises(ValueError):
            await manager.save_tx(Tx(bad, "h", 1.0, b"p"))
    # A valid id whose escaped name cannot be a file name: refused as input, nothing
    # written, the store keeps working.
    with pytest.raises(ValueError, match="too long to store"):
        await manager.save_tx(Tx("/" * 255, "h", 1.0, b"p"))
    assert await manager.load_tx("/" * 255) is None
    await manager.save_tx(Tx("after", "h", 1.0, b"p"))
    assert sorted(await manager.list_txs()) == ["after", longest_safe_chars]


@pytest.mark.asyncio
async def test_file_store_uses_the_same_names(tmp_path):
    fs = FileStore(str(tmp_path / "fs"))
    await fs.save("('127.0.0.1', 5)", b"one")
    await fs.save("plain", b"two")
    assert (tmp_path / "fs" / "~%28%27127.0.0.1%27%2C%205%29.bin").read_bytes() == b"one"
    assert (tmp_path / "fs" / "plain.bin").read_bytes() == b"two"
    assert sorted(await fs.list_keys()) == ["('127.0.0.1', 5)", "plain"]
    assert await fs.exists("plain") and not await fs.exists("nope")
    assert await fs.load("plain") == b"two"
    with pytest.raises(FileNotFoundError):
        await fs.load("nope")
    await fs.remove("plain")
    await fs.remove("plain")
    assert await fs.list_keys() == ["('127.0.0.1', 5)"]
    fs.close()


# A store the prototype wrote with such ids: its payloads at `<id>.bin` as the id reads
# (committed fixture, written by the prototype's own CLI: see its README).
PROTO_FIXTURE = REPO / "crates" / "poh-cli" / "tests" / "fixtures" / "prototype-ids"
NET = "('127.0.0.1', 5)"


def copy_prototype_fixture(tmp_path):
    base = tmp_path / "data"
    shutil.copytree(PROTO_FIXTURE / "store", base)
    shutil.copy(PROTO_FIXTURE / "outside.bin", tmp_path / "outside.bin")
    return base, base / "poh.db"


@pytest.mark.asyncio
async def test_a_prototype_store_with_unusual_ids_opens_as_it_is(tmp_path):
    base, db = copy_prototype_fixture(tmp_path)
    assert (base / f"{NET}.bin").is_file()
    m = await StorageManager.create(str(base), str(db))
    try:
        tx = await m.load_tx(NET)
        assert tx == Tx(NET, "", 1700000007.25, b"saved again by the prototype")
        assert (await m.load_tx("é")).payload == "payload of é".encode()
        assert (await m.load_tx("a b")).payload == bytes(range(256))
        assert (await m.load_tx(".hidden")).payload == b""
        assert (await m.load_tx("x" * 200)).timestamp == 1700000004.0
        # The prototype wrote this one outside its base: never read from there.
        with pytest.raises(FileNotFoundError):
            await m.load_tx("../outside")
        assert await m.file_store.load(NET) == b"saved again by the prototype"
        assert await m.file_store.exists("a b")
        assert NET in await m.file_store.list_keys()
        # recover renames them to their own names and reports every valid tx.
        valid = await m.recover()
        assert sorted(valid) == sorted([NET, "é", "a b", ".hidden", "x" * 200, "plain-1"])
        assert sorted(m.last_recover_report["adopted"]) == sorted([NET, "é", "a b", ".hidden", "x" * 200])
        assert not (base / f"{NET}.bin").exists()
        assert (base / f"{file_stem(NET)}.bin").read_bytes() == b"saved again by the prototype"
        assert (await m.load_tx(NET)).payload == b"saved again by the prototype"
    finally:
        await m.close()
    assert (tmp_path / "outside.bin").read_bytes() == b"written outside the base"


@pytest.mark.asyncio
async def test_file_store_reads_and_removes_the_prototypes_names(tmp_path):
    base, _ = copy_prototype_fixture(tmp_path)
    fs = FileStore(str(base))
    assert await fs.load("a b") == bytes(range(256))
    assert sorted(await fs.list_keys()) == sorted([NET, "é", "a b", ".hidden", "x" * 200, "plain-1"])
    with pytest.raises(FileNotFoundError):
        await fs.load("../outside")
    assert not await fs.exists("../outside")
    # A link planted at a prototype name is never followed.
    (base / "é.bin").unlink()
    os.symlink(tmp_path / "outside.bin", base / "é.bin")
    with pytest.raises(OSError):
        await fs.load("é")
    assert not await fs.exists("é")
    # A save writes the own name and drops the old file; a remove drops both names.
    await fs.save(NET, b"new")
    assert not (base / f"{NET}.bin").exists()
    assert await fs.load(NET) == b"new"
    await fs.remove("a b")
    assert not (base / "a b.bin").exists()
    assert "a b" not in await fs.list_keys()
    fs.close()
    assert (tmp_path / "outside.bin").read_bytes() == b"written outside the base"
