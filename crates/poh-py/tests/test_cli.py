"""The command lines, run as callers run them: ``python -m`` in a subprocess. Their
output is compared with what the prototype's own model prints for the same commands."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import require_seedref, run_module

TX = '{"tx_id":"1","holder_id":"h","timestamp":0.0,"payload":"YWJj"}'


def test_ttl_cli_scan(paths):
    base, db = paths
    assert run_module("poh_storage.app_storage", "save", "--tx", TX, "--base", str(base), "--db", str(db))[1] == "Saved 1\n"
    rc, out, err = run_module("poh_ttl.cli", "scan", "--base", str(base), "--db", str(db), "--ttl", "3600")
    assert (rc, out) == (0, "Expired: ['1']\n"), err
    rc, out, _ = run_module("poh_ttl.cli", "scan", "--base", str(base), "--db", str(db), "--ttl", "3600")
    assert (rc, out) == (0, "Expired: []\n")
    assert run_module("poh_storage.app_storage", "list", "--base", str(base), "--db", str(db))[1] == "[]\n"


def test_ttl_cli_run_logs_passes_until_interrupted(paths):
    base, db = paths
    run_module("poh_storage.app_storage", "save", "--tx", TX, "--base", str(base), "--db", str(db))
    p = subprocess.Popen([sys.executable, "-m", "poh_ttl.cli", "run", "--base", str(base), "--db", str(db),
                          "--ttl", "3600", "--interval", "0.1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 30
        lines = []
        while time.time() < deadline and sum("TTL GC removed" in x for x in lines) < 2:
            line = p.stderr.readline()
            if not line:
                break
            lines.append(line)
        assert "INFO: TTL GC removed: ['1']\n" in lines, lines
        assert "INFO: TTL GC removed: []\n" in lines, lines
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def cli_session(base, db, env=None):
    """The prototype CLI's commands in order; what each printed and its exit code."""
    steps = [
        ("init",),
        ("save", "--tx", TX),
        ("save", "--tx", '{"tx_id":"2","holder_id":"h2","timestamp":1700000000.25,"payload":""}'),
        ("save", "--tx", json.dumps({"tx_id": "é", "holder_id": "h", "timestamp": 5, "payload": "AAEC"})),
        ("list",),
        ("load", "--tx-id", "1"),
        ("load", "--tx-id", "2"),
        ("load", "--tx-id", "é"),
        ("load", "--tx-id", "missing"),
        ("delete", "--tx-id", "2"),
        ("delete", "--tx-id", "2"),
        ("list",),
        ("recover",),
    ]
    out = []
    for step in steps:
        rc, stdout, _ = run_module("poh_storage.app_storage", *step, "--base", str(base), "--db", str(db), env=env)
        out.append((step[0], rc, stdout))
    return out


def test_app_storage_prints_what_the_prototype_printed(tmp_path):
    seedref = require_seedref()
    ours = cli_session(tmp_path / "ours" / "data", tmp_path / "ours" / "data" / "poh.db")
    env = dict(os.environ, PYTHONPATH=str(seedref))
    theirs = cli_session(tmp_path / "proto" / "data", tmp_path / "proto" / "data" / "poh.db", env=env)

    def normalize(rows):
        # The prototype never stored holder_id (it loads back as ""); we do. Everything
        # else must match byte for byte. Its list is in insertion order, ours in id order;
        # the ids above are inserted in id order.
        out = []
        for cmd, rc, stdout in rows:
            if cmd == "load" and stdout.startswith("{"):
                d = json.loads(stdout)
                assert list(d) == ["tx_id", "holder_id", "timestamp", "payload"]
                d["holder_id"] = "*"
                stdout = json.dumps(d)
            out.append((cmd, rc, stdout))
        return out

    assert normalize(ours) == normalize(theirs)
    assert ours[5][2] == '{"tx_id": "1", "holder_id": "h", "timestamp": 0.0, "payload": "YWJj"}\n'
    assert ours[8][1:] == (1, "Not found\n")
    assert ours[4][2] == '["1", "2", "\\u00e9"]\n'


def test_app_storage_errors_exit_nonzero(paths):
    base, db = paths
    rc, out, err = run_module("poh_storage.app_storage", "save", "--tx", '{"tx_id":"a\\n","holder_id":"h","timestamp":1,"payload":""}',
                              "--base", str(base), "--db", str(db))
    assert rc == 1 and out == "" and "tx_id" in err
    rc, _, err = run_module("poh_storage.app_storage", "bogus", "--base", str(base), "--db", str(db))
    assert rc == 2


def test_stores_are_shared_with_the_prototype_both_ways(tmp_path):
    """A store the prototype's CLI wrote opens with ours, and the prototype reads ours."""
    seedref = require_seedref()
    proto_env = dict(os.environ, PYTHONPATH=str(seedref))
    base, db = tmp_path / "data", tmp_path / "data" / "poh.db"
    args = ("--base", str(base), "--db", str(db))
    assert run_module("poh_storage.app_storage", "save", "--tx", TX, *args, env=proto_env)[0] == 0
    rc, out, err = run_module("poh_storage.app_storage", "load", "--tx-id", "1", *args)
    assert rc == 0 and json.loads(out)["payload"] == "YWJj", err
    second = '{"tx_id":"t-2","holder_id":"h","timestamp":2.0,"payload":"AAEC"}'
    assert run_module("poh_storage.app_storage", "save", "--tx", second, *args)[0] == 0
    rc, out, err = run_module("poh_storage.app_storage", "load", "--tx-id", "t-2", *args, env=proto_env)
    assert rc == 0 and json.loads(out)["payload"] == "AAEC", err
    assert run_module("poh_storage.app_storage", "list", *args, env=proto_env)[1] == '["1", "t-2"]\n'
