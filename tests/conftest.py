"""Shared fixtures: pinned CPU threads, tiny models built once per session, a network guard.

torch is imported lazily, so tests that do not need it stay fast.
"""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))      # `import tiny_models` from any test

# CPU results depend on the thread count (DESIGN.md section 8): pin it before torch starts its pools.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


def pin_torch_threads() -> None:
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


@pytest.fixture(autouse=True)
def _pinned_threads():
    pin_torch_threads()      # cheap; only acts once a test has imported torch
    yield


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny SD1.x diffusers folder (fixed seed 0)."""
    import tiny_models
    pin_torch_threads()
    return tiny_models.save_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "tiny-sd1")


@pytest.fixture(scope="session")
def tiny_single_file(tmp_path_factory) -> Path:
    """The same weights as `tiny_model_dir` in the original LDM single-file layout."""
    import tiny_models
    pin_torch_threads()
    return tiny_models.save_tiny_single_file(tmp_path_factory.mktemp("tiny-single") / "tiny-sd1.safetensors")


@pytest.fixture(scope="session")
def tiny_lora(tmp_path_factory) -> Path:
    """A kohya-format LoRA for the tiny UNet's attention layers."""
    import tiny_models
    pin_torch_threads()
    return tiny_models.save_tiny_lora(tmp_path_factory.mktemp("tiny-lora") / "tiny-lora.safetensors")


@pytest.fixture
def network_guard(monkeypatch):
    """Any attempt to open a network connection or resolve a host name fails loudly, and is recorded."""
    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args)[:160])
        raise RuntimeError(f"NETWORK ATTEMPT during a test: {args!r}"[:200])

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny SDXL base: (diffusers folder, the same weights as an SGM single file)."""
    import tiny_models
    pin_torch_threads()
    out = tmp_path_factory.mktemp("tiny-sdxl")
    return tiny_models.save_tiny_sdxl(out / "tiny-sdxl", out / "tiny-sdxl.safetensors", seed=0)


@pytest.fixture(scope="session")
def tiny_sdxl_refiner(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny SDXL refiner (second text encoder only, aesthetic score): (folder, single file)."""
    import tiny_models
    pin_torch_threads()
    out = tmp_path_factory.mktemp("tiny-sdxl-refiner")
    return tiny_models.save_tiny_sdxl_refiner(out / "tiny-refiner", out / "tiny-refiner.safetensors")
