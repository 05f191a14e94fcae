"""`sdbake cache ls | verify | gc | clear`: look after the stage cache."""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from sdbake.runner.commands import add_actions, add_command
from sdbake.runner.locations import cache_dir_help

UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "g": 1 << 30, "gb": 1 << 30,
         "t": 1 << 40, "tb": 1 << 40}


def parse_size(text: str) -> int:
    found = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", text)
    if not found or found.group(2).lower() not in UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 500M, 20G)")
    return int(float(found.group(1)) * UNITS[found.group(2).lower()])


def register(subparsers: argparse._SubParsersAction) -> None:
    cache = add_command(subparsers, "cache", None, "list, verify, garbage-collect or clear the stage cache",
                        ["sdbake cache ls", "sdbake cache gc --max-size 20G",
                         "sdbake cache --cache-dir /mnt/shared/sdbake verify"])
    cache.add_argument("--cache-dir", metavar="DIR", help=cache_dir_help())
    actions = add_actions(cache, "action", "what to do")
    add_command(actions, "ls", run_ls, "entries with stage, size and last use", ["sdbake cache ls"])
    add_command(actions, "verify", run_verify, "check every entry's checksums; evict corrupt ones",
                ["sdbake cache verify"])
    gc = add_command(actions, "gc", run_gc, "evict least-recently-used entries",
                     ["sdbake cache gc --max-size 2G", "sdbake cache gc --older-than 30"])
    gc.add_argument("--max-size", type=parse_size, metavar="SIZE", help="keep at most this much (e.g. 2G)")
    gc.add_argument("--older-than", type=float, metavar="DAYS", help="evict entries unused for DAYS days")
    add_command(actions, "clear", run_clear, "remove every entry", ["sdbake cache clear"])


def _store(args, action: str):
    """The cache to work on; a folder that sdbake did not mark as its cache is refused (so pointing
    SDBAKE_CACHE at the wrong folder can never delete anything in it)."""
    from sdbake.runner.cache import CacheStore, default_cache_root
    store = CacheStore(Path(args.cache_dir) if args.cache_dir else default_cache_root(),
                       warn=lambda message: print(f"warning: {message}", file=sys.stderr))
    store.require_marked(action)
    return store


def _human(size: int) -> str:
    for unit in ("B", "K", "M", "G"):
        if size < 1024:
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{size:.1f}T"


def _size(entry) -> int:
    size = entry.info.get("size_bytes", 0)
    return size if isinstance(size, int) else 0


def run_ls(args) -> int:
    store = _store(args, "list the cache")
    entries = store.entries()
    total = 0
    for entry in sorted(entries, key=store.last_used, reverse=True):
        total += _size(entry)
        stage = entry.info.get("stage", {})
        label = f"{_printable(stage.get('recipe', '?'))}:{_printable(stage.get('id', '?'))}" \
            if not entry.info.get("corrupt") else "(corrupt: `cache verify` evicts it)"
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(store.last_used(entry)))
        print(f"{entry.key[:12]}  {_human(_size(entry)):>7}  {used}  {label}")
    print(f"{len(entries)} entries, {_human(total)} in {store.root}")
    return 0


def _printable(value) -> str:
    """A stage's recipe and id as written in a (possibly hostile) entry.json, safe for a terminal."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in str(value))[:80]


def run_verify(args) -> int:
    store = _store(args, "verify the cache")
    entries = store.entries()
    bad = 0
    for entry in entries:
        if store.get(entry.key, touch=False) is None:
            bad += 1
            print(f"corrupt: {entry.key[:12]} (evicted)")
    print(f"verified {len(entries)} entries: {bad} corrupt")
    return 1 if bad else 0


def run_gc(args) -> int:
    store = _store(args, "garbage-collect the cache")
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
        total = sum(_size(e) for e in entries)
        for entry in entries:
            if total <= args.max_size:
                break
            total -= _size(entry)
            store.evict(entry.key)
            evicted += 1
    # Entries being written live in tmp/ until their atomic rename: only abandoned ones are removed.
    stale = store.clean_stale_tmp()
    print(f"evicted {evicted} entries" + (f", removed {stale} abandoned temporary folders" if stale else ""))
    return 0


def run_clear(args) -> int:
    store = _store(args, "clear the cache")
    entries = store.entries()
    count = len(entries)
    for entry in entries:
        store.evict(entry.key)
    print(f"cleared {count} entries from {store.root}")
    return 0
