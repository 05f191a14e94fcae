"""Batched points that round as they would alone: exact batching on CPU (DESIGN.md section 12).

CPU matrix kernels choose their algorithm by problem size, so a product over 2 rows and one over 32
differ in the last bits: measured with torch 2.13 on this project's UNets, linear layers over
(rows, features) inputs (the time embeddings, M < 4 rows) and 1x1 convolutions over small batches
do, while the 3x3 convolutions, attention, normalization and the linear layers over tokens give
every row the same bits whatever the batch. During a batched call those few layers run on each
point's rows separately: each point's result then equals its unbatched run bit for bit (the tests
render both and compare pixels), and batching keeps its speed, since those layers are a small share
of the work.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def _size_dependent(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.Linear) or (isinstance(module, torch.nn.Conv2d)
                                                   and module.kernel_size == (1, 1))


def _per_point(forward, sizes: list[int], total: int):
    def run(inputs: torch.Tensor, *args, **kwargs):
        # a Linear over tokens (rows, tokens, features) has enough rows per point: leave it batched
        if inputs.shape[0] != total or (inputs.dim() == 3 and inputs.shape[1] >= 8):
            return forward(inputs, *args, **kwargs)
        return torch.cat([forward(part, *args, **kwargs) for part in torch.split(inputs, sizes)])
    return run


@contextmanager
def rows_per_point(unet: torch.nn.Module, sizes: list[int]) -> Iterator[None]:
    """Within the block, the size-dependent layers of `unet` compute each point's rows (consecutive
    groups of `sizes` rows of a call's batch) separately."""
    if len(sizes) < 2:
        yield
        return
    patched = [(module, module.__dict__.get("forward")) for module in unet.modules() if _size_dependent(module)]
    for module, _ in patched:
        module.forward = _per_point(module.forward, sizes, sum(sizes))
    try:
        yield
    finally:
        for module, own_forward in patched:     # back to the class's forward, or a hook's (accelerate)
            if own_forward is None:
                del module.forward
            else:
                module.forward = own_forward
