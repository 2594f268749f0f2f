"""poh-ttl CLI, as in the prototype: ``scan`` (one pass, prints ``Expired: [...]``) and
``run`` (a pass every --interval seconds, logged, until interrupted).

    python -m poh_ttl.cli scan --base data --db data/poh.db --ttl 3600
"""
import argparse
import asyncio
import logging
import sys
from typing import List, Optional

from poh_storage.storage import StorageManager

from .manager import TTLManager


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="poh-ttl")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("scan", "run"):
        sp = sub.add_parser(name)
        sp.add_argument("--base", required=True)
        sp.add_argument("--db", required=True)
        sp.add_argument("--ttl", type=float, required=True)
        if name == "run":
            sp.add_argument("--interval", type=float, required=True)
    return p


async def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    manager = await StorageManager.create(args.base, args.db)
    try:
        ttl = TTLManager(manager, args.ttl)
        if args.cmd == "scan":
            print(f"Expired: {await ttl.scan_once()}")
        else:
            logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
            await ttl.run(args.interval)  # runs until interrupted
        return 0
    finally:
        await manager.close()


def run() -> None:
    """Console-script entry point (``poh-ttl``)."""
    if sys.platform == "win32":  # pragma: no cover
        asyncio.set_event_loop_policy(asyncio.WindowsSelectorEventLoopPolicy())  # type: ignore[attr-defined]
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    run()
