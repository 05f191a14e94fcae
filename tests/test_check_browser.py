"""The check report in a real browser: headless Chromium loads it, every <img> decodes, and a
screenshot of the page is not blank. Chromium is Debian's `chromium` (`make test` installs it where it
can); without it these tests skip and say so."""
from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from sdbake.runner.check.metrics import Tolerances, compare
from sdbake.runner.check.report import write_report
from sdbake.runner.check.run import Case, CheckResult

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]


@pytest.fixture(scope="session")
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        # Tests install nothing on the machine: `make test` installs Chromium where it can.
        pytest.skip("chromium is not installed (make test installs it with apt-get when run as root)")
    return found


def browse(chromium: str, page: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def png(pixels: np.ndarray) -> bytes:
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "PNG")
    return buffer.getvalue()


def report_with_one_regression(folder: Path, new_bytes: bytes | None = None) -> Path:
    yy, xx = np.mgrid[0:64, 0:64]
    golden = np.stack([xx * 4, yy * 4, np.full_like(xx, 128)], axis=2).astype(np.uint8)
    new = golden.copy()
    new[40:44, 10:14] = (255, 0, 255)
    case = Case("r.toml", "r", "r/1.png", status="fail", message="max abs diff", golden_bytes=png(golden),
                new_bytes=new_bytes if new_bytes is not None else png(new), metrics=compare(golden, new),
                tolerances=Tolerances())
    return write_report(CheckResult([case], [], 1.0), folder)


def images_marker(dom: str) -> str:
    import re
    found = re.search(r'data-images-loaded="([^"]*)"', dom)
    return found.group(1) if found else ""


def test_report_renders_all_images_in_chromium(chromium, tmp_path):
    page = report_with_one_regression(tmp_path / "report")
    dom = browse(chromium, page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-500:]
    assert images_marker(dom.stdout) == "all", dom.stdout[:500]
    assert dom.stdout.count("<img") == 3

    shot = tmp_path / "shot.png"
    done = browse(chromium, page, tmp_path, f"--screenshot={shot}", "--window-size=1200,2000")
    assert done.returncode == 0 and shot.is_file(), done.stderr[-500:]
    from PIL import Image
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
    colours = np.unique(pixels, axis=0)
    assert len(colours) > 200, "the screenshot is (nearly) blank"
    magenta = np.all(pixels == (255, 0, 255), axis=1).sum()
    assert magenta > 50, "the new render's magenta patch is not on screen"


def test_a_broken_image_is_caught_by_the_marker(chromium, tmp_path):
    page = report_with_one_regression(tmp_path / "report", new_bytes=b"\x89PNG\r\n\x1a\nnot really")
    dom = browse(chromium, page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-500:]
    assert images_marker(dom.stdout) == "1/2"        # the golden loads; the broken render does not
