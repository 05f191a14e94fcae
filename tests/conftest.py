"""Shared fixtures: an isolated environment, pinned CPU threads, tiny models built once per session, a
network guard.

torch is imported lazily, so tests that do not need it stay fast.
"""
from __future__ import annotations

import atexit
import os
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))      # `import tiny_models` from any test

# CPU results depend on the thread count (docs/design.md section 8): pin it before torch starts its pools.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ["TRANSFORMERS_OFFLINE"] = "1"


def pin_torch_threads() -> None:
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


@pytest.fixture(autouse=True)
def _pinned_threads():
    pin_torch_threads()      # cheap; only acts once a test has imported torch
    yield


@dataclass(frozen=True)
class IsolatedEnv:
    """The folders a test runs with instead of the user's (see `isolated_env`)."""
    home: Path
    config: Path       # $XDG_CONFIG_HOME
    cache: Path        # $XDG_CACHE_HOME: the default stage cache and hash index live under it

    @classmethod
    def under(cls, root: Path) -> IsolatedEnv:
        env = cls(home=root / "home", config=root / "config", cache=root / "cache")
        env.home.mkdir(parents=True)
        return env

    def variables(self) -> dict[str, str]:
        root = self.home.parent
        return {"HOME": str(self.home), "XDG_CONFIG_HOME": str(self.config), "XDG_CACHE_HOME": str(self.cache),
                "XDG_DATA_HOME": str(root / "data"), "XDG_STATE_HOME": str(root / "state"),
                "HF_HOME": str(root / "huggingface"), "HF_HUB_OFFLINE": "1",
                # the thread count is in the numerics fingerprint: one value for every test and fixture
                "SDBAKE_THREADS": "1"}


def _caller_settings() -> list[str]:
    return [name for name in os.environ if name.startswith(("SDBAKE_", "HF_", "XDG_"))]


# Session- and module-scoped fixtures (tiny models, shared renders) run before any function fixture:
# give them the same kind of environment, in a folder removed at exit.
for _name in _caller_settings():
    del os.environ[_name]
_session_root = Path(tempfile.mkdtemp(prefix="sdbake-tests-"))
atexit.register(shutil.rmtree, _session_root, ignore_errors=True)
os.environ.update(IsolatedEnv.under(_session_root).variables())


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory, monkeypatch) -> IsolatedEnv:
    """No test reads or writes the user's files or settings, nor another test's: HOME and the XDG
    folders point into a fresh folder, the caller's SDBAKE_*, HF_* and XDG_* variables are gone,
    the hub stays offline and SDBAKE_THREADS is 1. What a test sets with monkeypatch is undone after it."""
    for name in _caller_settings():
        monkeypatch.delenv(name)
    env = IsolatedEnv.under(tmp_path_factory.mktemp("env"))
    for name, value in env.variables().items():
        monkeypatch.setenv(name, value)
    return env


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


@pytest.fixture(scope="session")
def tiny_vpred(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny v-prediction SD model: (folder, the same weights as a single file with the v_pred key)."""
    import tiny_models
    pin_torch_threads()
    out = tmp_path_factory.mktemp("tiny-vpred")
    tiny_models.save_tiny_vpred(out / "tiny-vpred", out / "tiny-vpred.safetensors")
    return out / "tiny-vpred", out / "tiny-vpred.safetensors"


@pytest.fixture(scope="session")
def tiny_sdxl_inpaint(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny 9-channel SDXL inpainting model: (folder, single file)."""
    import tiny_models
    pin_torch_threads()
    out = tmp_path_factory.mktemp("tiny-sdxl-inpaint")
    return tiny_models.save_tiny_sdxl_inpaint(out / "tiny-sdxl-inpaint", out / "tiny-sdxl-inpaint.safetensors")
