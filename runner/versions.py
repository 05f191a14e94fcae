"""Installed versions of the libraries whose version a result depends on (sdbake's own is
sdbake.__version__). No torch import: read from the package metadata."""
from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version


@cache
def package_version(name: str) -> str:
    """The installed version of a distribution, or "none" when it is not installed."""
    try:
        return version(name)
    except PackageNotFoundError:
        return "none"
