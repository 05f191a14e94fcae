"""Faults around the stage cache: kill -9 mid-write, a flipped byte, two runs racing on one cache.

Real processes and real signals (`sdbake run` through `python -m sdbake.runner.cli`), as the issue asks: an
in-process test cannot show what a killed writer leaves on disk.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from recipe_helpers import txt2img, write

pytest.importorskip("torch")

HIRES = '[[stages]]\ntype = "hires"\nscale = 1.5\ndenoise = 0.5\nsteps = 3\n'

# `sdbake run` that stops for good inside the cache write of one stage (after its files are written,
# before the rename that publishes the entry) and says so by creating a marker file: the test's
# SIGKILL then lands exactly in the middle of a cache write.
PAUSED_WRITER = """
import json, os, sys, time
import sdbake.runner.cache as cache
real_fsync = cache._fsync_file
def fsync_then_pause(path):
    real_fsync(path)
    info = json.loads((path.parent / "entry.json").read_text())
    if info["stage"]["id"] == os.environ["PAUSE_IN_WRITE_OF"]:
        open(os.environ["PAUSED_MARKER"], "w").close()
        time.sleep(600)
cache._fsync_file = fsync_then_pause
from sdbake.runner.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def env(tmp_path, monkeypatch) -> dict[str, str]:
    monkeypatch.setenv("SDBAKE_CACHE", str(tmp_path / "cache"))
    return dict(os.environ)


def sdbake(*args, cwd: Path, env: dict, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sdbake.runner.cli", *args], check=False, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def start_sdbake(*args, cwd: Path, env: dict, code: list[str] | None = None) -> subprocess.Popen:
    command = [sys.executable, *(code or ["-m", "sdbake.runner.cli"]), *args]
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_for(condition, process: subprocess.Popen, timeout_s: float = 120, poll_s: float = 0.005) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"sdbake ended (exit {process.returncode}) before the moment to kill it: "
                        f"{process.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("timed out waiting for the moment to kill sdbake")
        time.sleep(poll_s)


def kill_9(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL


def pixels(path: Path) -> tuple:
    from PIL import Image
    with Image.open(path) as image:
        return image.size, image.mode, image.tobytes()


def uninterrupted_render(tmp_path: Path, text: str) -> Path:
    """The same recipe rendered without any cache, in this process."""
    from sdbake.runner.api import render
    from sdbake.schemas.loader import load_recipe
    recipe = write(tmp_path, "uninterrupted.toml", text)
    result = render(load_recipe(recipe), output_root=tmp_path / "uninterrupted", no_cache=True, threads=1)
    (output,) = result.outputs
    return output


def stage_keys(recipe: Path) -> dict[str, str]:
    from sdbake.runner.api import make_plan
    from sdbake.schemas.loader import load_recipe
    return {inv.id: inv.key for inv in make_plan(load_recipe(recipe), threads=1).invocations}


def rerun_here(capsys, recipe: Path, out: Path) -> tuple[int, str]:
    """`sdbake run` again, in this process (the model loads once per test session): exit code, stderr."""
    from sdbake.runner.cli import main
    capsys.readouterr()
    code = main(["run", str(recipe), "--out", str(out)])
    return code, capsys.readouterr().err


def assert_cache_verifies(tmp_path: Path, env: dict) -> None:
    verified = sdbake("cache", "verify", cwd=tmp_path, env=env)
    assert verified.returncode == 0 and ": 0 corrupt" in verified.stdout, verified.stdout + verified.stderr


def test_kill_9_inside_a_cache_write_then_rerun_completes_with_the_same_pixels(tmp_path, env, tiny_model_dir,
                                                                                capsys):
    text = txt2img(tiny_model_dir, steps=8, split=5, extra_stages=HIRES, path="k.png", name="killed")
    recipe = write(tmp_path, "k.toml", text)
    keys = stage_keys(recipe)
    marker = tmp_path / "paused-in-write"
    writer = start_sdbake("run", "k.toml", "--out", "out", cwd=tmp_path, code=["-c", PAUSED_WRITER],
                          env=dict(env, PAUSE_IN_WRITE_OF="sample-1", PAUSED_MARKER=str(marker)))
    wait_for(marker.exists, writer)
    kill_9(writer)

    from sdbake.runner.cache import CacheStore
    store = CacheStore(tmp_path / "cache")
    half_written = list((tmp_path / "cache" / "tmp").iterdir())
    assert [p.name.split(".")[0] for p in half_written] == [keys["sample-1"]]
    assert (half_written[0] / "state.safetensors").is_file()
    assert [e.key for e in store.entries()] == [keys["encode"]]      # the killed entry was never published

    code, stderr = rerun_here(capsys, recipe, tmp_path / "out")
    assert code == 0, stderr
    assert "encode: HIT" in stderr and "sample-1: ran" in stderr and "corrupt" not in stderr
    assert pixels(tmp_path / "out" / "k.png") == pixels(uninterrupted_render(tmp_path, text))
    assert sorted(e.key for e in store.entries()) == sorted(keys.values())
    assert_cache_verifies(tmp_path, env)


def test_kill_9_as_soon_as_a_render_writes_to_the_cache_then_rerun_matches(tmp_path, env, tiny_model_dir,
                                                                           capsys):
    # No hook this time: poll the cache folder and kill at the first sign of a write, wherever it lands.
    text = txt2img(tiny_model_dir, steps=20, size=128, sampler="dpmpp_2m", path="big.png", name="big")
    write(tmp_path, "big.toml", text)
    cache = tmp_path / "cache"
    run = start_sdbake("run", "big.toml", "--out", "out", cwd=tmp_path, env=env)

    def writing_or_written() -> bool:
        return any((cache / "tmp").glob("*")) or any((cache / "objects").glob("*/*"))
    wait_for(writing_or_written, run)
    kill_9(run)
    assert not (tmp_path / "out" / "big.png").exists()             # killed before the end

    code, stderr = rerun_here(capsys, tmp_path / "big.toml", tmp_path / "out")
    assert code == 0, stderr
    assert "corrupt" not in stderr
    assert pixels(tmp_path / "out" / "big.png") == pixels(uninterrupted_render(tmp_path, text))
    assert_cache_verifies(tmp_path, env)


def test_a_flipped_byte_in_a_stored_state_is_detected_warned_and_recomputed(tmp_path, env, tiny_model_dir,
                                                                             capsys, monkeypatch):
    from sdbake.runner.cache import CacheStore
    from sdbake.runner.cli import main
    from sdbake.stages.denoiser import Denoiser
    text = txt2img(tiny_model_dir, steps=8, split=5, extra_stages=HIRES, path="f.png", name="flipped")
    recipe = write(tmp_path, "f.toml", text)
    args = ["run", str(recipe), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 0
    first = pixels(tmp_path / "out" / "f.png")

    stored = CacheStore(tmp_path / "cache").entry_folder(stage_keys(recipe)["sample-1"]) / "state.safetensors"
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01                      # one bit, inside the latent's bytes
    stored.write_bytes(bytes(data))
    (tmp_path / "out" / "f.png").unlink()
    calls = []
    original = Denoiser.__call__
    monkeypatch.setattr(Denoiser, "__call__",
                        lambda self, x, sigma: calls.append(1) or original(self, x, sigma))
    capsys.readouterr()

    assert main(args) == 0
    stderr = capsys.readouterr().err
    assert "corrupt" in stderr and "sample-1: ran" in stderr and "encode: HIT" in stderr
    assert "sample-2: HIT" in stderr and "hires: HIT" in stderr
    assert len(calls) == 5                             # only sample-1's steps 0-5 ran again
    assert pixels(tmp_path / "out" / "f.png") == first
    assert_cache_verifies(tmp_path, env)


def test_two_concurrent_runs_on_one_cache_both_finish_with_identical_outputs(tmp_path, env, tiny_model_dir):
    text = txt2img(tiny_model_dir, steps=8, split=5, extra_stages=HIRES, path="c.png", name="concurrent")
    recipe = write(tmp_path, "c.toml", text)
    runs = [start_sdbake("run", "c.toml", "--out", f"out{n}", cwd=tmp_path, env=env) for n in (1, 2)]
    for run in runs:
        _, stderr = run.communicate(timeout=180)
        assert run.returncode == 0, stderr
    one, two = tmp_path / "out1" / "c.png", tmp_path / "out2" / "c.png"
    assert one.read_bytes() == two.read_bytes()
    from sdbake.runner.cache import CacheStore
    store = CacheStore(tmp_path / "cache")
    assert sorted(e.key for e in store.entries()) == sorted(stage_keys(recipe).values())
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []
    assert_cache_verifies(tmp_path, env)
