"""Where sdbake keeps its files outside a project: the platform's folders (platformdirs; XDG on Linux).

On Linux, with the XDG variables unset: config `~/.config/sdbake/`, cache `~/.cache/sdbake/`;
macOS `~/Library/Application Support/sdbake` and `~/Library/Caches/sdbake`; Windows `%LOCALAPPDATA%\\sdbake`.
Every command reads these through here, so they agree; `$SDBAKE_CACHE`, `$SDBAKE_CONFIG` and
`$SDBAKE_HASH_INDEX` override them. No torch here.
"""
from __future__ import annotations

from pathlib import Path

import platformdirs

APP = "sdbake"


def user_config_dir() -> Path:
    """The folder of the user's `config.toml`."""
    return platformdirs.user_config_path(APP, appauthor=False)


def user_cache_dir() -> Path:
    """The folder of everything sdbake can recompute: the stage cache and the model hash index."""
    return platformdirs.user_cache_path(APP, appauthor=False)


def default_stage_cache() -> Path:
    """The stage cache of every command when neither `--cache-dir` nor `$SDBAKE_CACHE` is given."""
    return user_cache_dir() / "stages"


def cache_dir_help() -> str:
    """The help of every `--cache-dir` option: the same default everywhere, spelled out for this machine."""
    return f"stage cache folder (default: $SDBAKE_CACHE, else {default_stage_cache()})"
