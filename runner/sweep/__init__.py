"""Sweeps: a recipe's `[matrix]` (or `--matrix`) expanded into points that share work through the cache,
rendered in a cache-friendly order and drawn as labelled X/Y/Z grids."""
