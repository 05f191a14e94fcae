"""`sdbake cache ls | verify | gc | clear`: look after the stage cache."""
from __future__ import annotations

import argparse
import re
import shutil
import time
from pathlib import Path

from sdbake.runner.locations import cache_dir_help

UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "g": 1 << 30, "gb": 1 << 30,
         "t": 1 << 40, "tb": 1 << 40}
TMP_GRACE_S = 3600          # a tmp/ folder younger than this may belong to a running writer


def parse_size(text: str) -> int:
    found = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", text)
    if not found or found.group(2).lower() not in UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 500M, 20G)")
    return int(float(found.group(1)) * UNITS[found.group(2).lower()])


def register(subparsers: argparse._SubParsersAction) -> None:
    cache = subparsers.add_parser(
        "cache", help="list, verify, garbage-collect or clear the stage cache",
        epilog="examples:\n  sdbake cache ls\n  sdbake cache gc --max-size 20G\n"
               "  sdbake cache --cache-dir /mnt/shared/sdbake verify")
    cache.add_argument("--cache-dir", metavar="DIR", help=cache_dir_help())
    actions = cache.add_subparsers(dest="action", metavar="ACTION", required=True, help="what to do")
    actions.add_parser("ls", help="entries with stage, size and last use",
                       epilog="example:\n  sdbake cache ls").set_defaults(func=run_ls)
    actions.add_parser("verify", help="check every entry's checksums; evict corrupt ones",
                       epilog="example:\n  sdbake cache verify").set_defaults(func=run_verify)
    gc = actions.add_parser("gc", help="evict least-recently-used entries",
                            epilog="examples:\n  sdbake cache gc --max-size 2G\n  sdbake cache gc --older-than 30")
    gc.add_argument("--max-size", type=parse_size, metavar="SIZE", help="keep at most this much (e.g. 2G)")
    gc.add_argument("--older-than", type=float, metavar="DAYS", help="evict entries unused for DAYS days")
    gc.set_defaults(func=run_gc)
    actions.add_parser("clear", help="remove every entry",
                       epilog="example:\n  sdbake cache clear").set_defaults(func=run_clear)


def _store(args):
    from sdbake.runner.cache import CacheStore, default_cache_root
    return CacheStore(Path(args.cache_dir) if args.cache_dir else default_cache_root())


def _human(size: int) -> str:
    for unit in ("B", "K", "M", "G"):
        if size < 1024:
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{size:.1f}T"


def run_ls(args) -> int:
    store = _store(args)
    total = 0
    for entry in sorted(store.entries(), key=store.last_used, reverse=True):
        size = entry.info.get("size_bytes", 0)
        total += size
        stage = entry.info.get("stage", {})
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(store.last_used(entry)))
        print(f"{entry.key[:12]}  {_human(size):>7}  {used}  {stage.get('recipe', '?')}:{stage.get('id', '?')}")
    print(f"{len(store.entries())} entries, {_human(total)} in {store.root}")
    return 0


def run_verify(args) -> int:
    store = _store(args)
    entries = store.entries()
    bad = 0
    for entry in entries:
        if store.get(entry.key, touch=False) is None:
            bad += 1
            print(f"corrupt: {entry.key[:12]} (evicted)")
    print(f"verified {len(entries)} entries: {bad} corrupt")
    return 1 if bad else 0


def run_gc(args) -> int:
    store = _store(args)
    entries = sorted(store.entries(), key=store.last_used)           # least recently used first
    now = time.time()
    evicted = 0
    if args.older_than is not None:
        for entry in list(entries):
            if now - store.last_used(entry) > args.older_than * 86400:
                store.evict(entry.key)
                entries.remove(entry)
                evicted += 1
    if args.max_size is not None:
        total = sum(e.info.get("size_bytes", 0) for e in entries)
        for entry in entries:
            if total <= args.max_size:
                break
            total -= entry.info.get("size_bytes", 0)
            store.evict(entry.key)
            evicted += 1
    # Entries being written live in tmp/ until their atomic rename: only abandoned ones are removed.
    tmp = store.root / "tmp"
    for folder in tmp.iterdir() if tmp.is_dir() else []:
        if now - folder.stat().st_mtime > TMP_GRACE_S:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"evicted {evicted} entries")
    return 0


def run_clear(args) -> int:
    store = _store(args)
    count = len(store.entries())
    for entry in store.entries():
        store.evict(entry.key)
    print(f"cleared {count} entries from {store.root}")
    return 0
