"""poh-storage CLI, as in the prototype: init, save, load, delete, list, recover (all take
--base and --db); prints what the prototype printed.

    python -m poh_storage.app_storage save --base data --db data/poh.db --tx '{...}'

Every command also takes ``--layout files|segments`` (default ``$POH_LAYOUT``, else the
store's own, or files for a new store) and ``--segment-window SECONDS`` for the store it
creates, as ``StorageManager.create`` does:

    python -m poh_storage.app_storage init --base data --db data/poh.db --layout segments
"""
import argparse
import asyncio
import base64
import json
import sys
from typing import List, Optional

from .storage import LAYOUTS, StorageManager
from .types import Tx


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="poh-storage")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("init", "save", "load", "delete", "list", "recover"):
        sp = sub.add_parser(name)
        sp.add_argument("--base", required=True)
        sp.add_argument("--db", required=True)
        sp.add_argument("--layout", choices=LAYOUTS, default=None,
                        help="layout of a store this creates (default: $POH_LAYOUT, else files); "
                             "an existing store keeps its own")
        sp.add_argument("--segment-window", type=float, default=None, metavar="SECONDS",
                        help="time window of each segment of a new segments store")
        if name == "save":
            sp.add_argument("--tx", required=True, help="JSON object; payload is base64")
        if name in ("load", "delete"):
            sp.add_argument("--tx-id", required=True)
    return p


async def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    manager = await StorageManager.create(args.base, args.db, layout=args.layout,
                                          segment_window=args.segment_window)
    try:
        if args.cmd == "init":
            print("Initialized")
        elif args.cmd == "save":
            d = json.loads(args.tx)
            tx = Tx(str(d["tx_id"]), str(d["holder_id"]), float(d["timestamp"]),
                    base64.b64decode(d["payload"]))
            await manager.save_tx(tx)
            print(f"Saved {tx.tx_id}")
        elif args.cmd == "load":
            loaded = await manager.load_tx(args.tx_id)
            if loaded is None:
                print("Not found")
                return 1
            print(json.dumps({"tx_id": loaded.tx_id, "holder_id": loaded.holder_id,
                              "timestamp": loaded.timestamp,
                              "payload": base64.b64encode(loaded.payload).decode()}))
        elif args.cmd == "delete":
            await manager.delete_tx(args.tx_id)
            print(f"Deleted {args.tx_id}")
        elif args.cmd == "list":
            print(json.dumps(await manager.list_txs()))
        elif args.cmd == "recover":
            print(json.dumps(await manager.recover()))
        return 0
    finally:
        await manager.close()


def run() -> None:
    """Console-script entry point (``poh-storage``)."""
    if sys.platform == "win32":  # pragma: no cover
        asyncio.set_event_loop_policy(asyncio.WindowsSelectorEventLoopPolicy())  # type: ignore[attr-defined]
    sys.exit(asyncio.run(main()))


if __name__ == "__main__":
    run()
