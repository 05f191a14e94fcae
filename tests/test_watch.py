"""`sdbake watch --serve` driven the way a user drives it: a recipe edited on disk, the page in headless
Chromium (skipped when /usr/bin/chromium is absent), the server on loopback only."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]

RECIPE = '''version = 1
name = "w"
[models.m]
checkpoint = "{model}"
[defaults]
model = "m"
seed = 5
width = 64
height = 64
steps = 6
sampler = "euler"
scheduler = "karras"
cfg = 5.0

[[stages]]
type = "encode"
prompt = "a <b>red</b> circle"

[[stages]]
type = "sample"
preview_every = 3

[[stages]]
type = "save"
path = "base.png"

[[stages]]
type = "hires"
scale = 1.5
denoise = 0.45
steps = 3

[[stages]]
type = "save"
path = "final.png"
'''


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("headless Chromium is not installed (/usr/bin/chromium)")
    return found


def dump_dom(chromium: str, url: str, tmp_path: Path, budget_ms: int | None = None) -> subprocess.Popen:
    """Chromium loading the page; its stdout is the DOM once the page has loaded, or with `budget_ms`
    once that much page time has passed (page time stands still while a request is in flight, so the
    page's long poll keeps it open, and updating, while a render runs)."""
    profile = tmp_path / f"profile-{time.monotonic_ns()}"
    budget = [f"--virtual-time-budget={budget_ms}"] if budget_ms else []
    return subprocess.Popen([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", *budget, url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def dom_of(browser: subprocess.Popen) -> str:
    out, err = browser.communicate(timeout=180)
    assert browser.returncode == 0, err[-500:]
    return out


class Watch:
    def __init__(self, tmp_path: Path, model: Path):
        self.recipe = tmp_path / "w.toml"
        self.recipe.write_text(RECIPE.format(model=model), encoding="utf-8")
        self.out = tmp_path / "o"
        env = dict(os.environ, SDBAKE_CACHE=str(tmp_path / "cache"))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sdbake", "watch", str(self.recipe), "--out", str(self.out), "--serve",
             "--port", "0", "--poll", "0.2", "--device", "cpu", "--quiet"],
            cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
        self.url = ""
        for line in self.process.stderr:
            found = re.match(r"serving (http://\S+)", line)
            if found:
                self.url = found.group(1)
                break
        assert self.url, "watch printed no URL"
        self.version = -1

    def get(self, path: str, host: str | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url.rstrip("/") + path)
        if host:
            request.add_header("Host", host)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def state(self) -> dict:
        return json.loads(self.get("/state.json")[1])

    def wait_for(self, state: str, after_attempt: int = 0, timeout_s: float = 240) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            current = json.loads(self.get(f"/state.json?after={self.version}&wait=5")[1])
            self.version = current["version"]
            if current["state"] == state and current["attempt"] > after_attempt:
                return current
            assert self.process.poll() is None, "sdbake watch exited"
        raise AssertionError(f"no {state} state after {timeout_s} s: {self.state()}")

    def stop(self):
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def watch(tmp_path_factory, tiny_model_dir):
    session = Watch(tmp_path_factory.mktemp("watch"), tiny_model_dir)
    yield session
    session.stop()


def statuses(state: dict) -> dict[str, str]:
    return {row["id"]: row["status"] for row in state["stages"]}


def test_watch_page_follows_edits_and_errors_in_chromium(watch, chromium, tmp_path):
    first = watch.wait_for("ok")
    assert set(statuses(first).values()) == {"ran"}
    dom = dom_of(dump_dom(chromium, watch.url, tmp_path))
    for stage in ("encode", "sample", "save-1", "hires", "save-2"):
        assert f"<td>{stage}</td>" in dom
    assert 'data-images-loaded="all"' in dom
    assert dom.count('<img src="/files/') == 2 and dom.count('<img src="/preview/') == 2   # steps 3 and 6

    base, final = watch.out / "base.png", watch.out / "final.png"
    base_stat, final_bytes = base.stat(), final.read_bytes()
    browser = dump_dom(chromium, watch.url, tmp_path, budget_ms=2500)   # open before the edit, left open
    time.sleep(3)
    watch.recipe.write_text(watch.recipe.read_text().replace("denoise = 0.45", "denoise = 0.6"))
    edited = watch.wait_for("ok", after_attempt=first["attempt"])
    rows = statuses(edited)
    assert rows["encode"] == rows["sample"] == "HIT" and rows["hires"] == "ran" and rows["save-2"] == "ran"
    assert base.stat().st_mtime_ns == base_stat.st_mtime_ns            # the base image is left as it was
    assert rows["save-1"] == "HIT" and not (watch.out / "base-1.png").exists()
    assert edited["previews"] == [["sample", 3, 0], ["sample", 6, 0]]  # a hit keeps its stage's previews
    new_final = next(path for stage, path, _ in edited["images"] if stage == "save-2")
    assert (watch.out / new_final).read_bytes() != final_bytes
    # Saving again without a change: every stage hits, no file is written, and the open page's
    # long poll answers at once instead of after its 25 s.
    watch.recipe.write_text(watch.recipe.read_text())
    again = watch.wait_for("ok", after_attempt=edited["attempt"])
    assert set(statuses(again).values()) == {"HIT"} and again["images"] == edited["images"]
    live = dom_of(browser)                   # the page that was open during the edit updated itself
    new_mtime = next(mtime for stage, _, mtime in edited["images"] if stage == "save-2")
    assert f"{new_final}?v={new_mtime}" in live, "the open page does not show the new image"
    assert 'data-images-loaded="all"' in live

    with watch.recipe.open("a") as recipe:
        recipe.write("this is = = not toml\n")
    failed = watch.wait_for("error", after_attempt=again["attempt"])
    assert re.search(r"w\.toml:\d+:\d+: invalid TOML", failed["error"])
    dom = dom_of(dump_dom(chromium, watch.url, tmp_path))
    assert re.search(r"w\.toml:\d+:\d+: invalid TOML", dom)
    assert f"{new_final}?v={new_mtime}" in dom and 'data-images-loaded="all"' in dom   # the last good render
    assert (watch.out / new_final).is_file()


def test_watch_serves_loopback_only_and_only_the_render_files(watch, tmp_path):
    deadline = time.monotonic() + 240
    while not watch.state()["images"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert watch.url.startswith("http://127.0.0.1:")
    port = int(watch.url.rsplit(":", 1)[1].strip("/"))
    for address in _other_addresses():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(2)
            assert probe.connect_ex((address, port)) != 0, f"the server answers on {address}"
    secret = watch.out.parent / "secret.txt"
    secret.write_text("secret")
    listed = watch.state()["images"][0][1]
    assert watch.get(f"/files/{listed}")[0] == 200
    for path in ("/files/../secret.txt", "/files/%2e%2e/secret.txt", "/files/..%2fsecret.txt",
                 "/files/" + str(secret), "/files/w.toml", "/files/../w.toml", f"/files/{listed}/../../secret.txt", "/etc/passwd"):
        status, body = watch.get(path)
        assert status == 404 and b"secret" not in body, path
    assert watch.get("/", host="evil.example:80")[0] == 403      # DNS rebinding: another name for us
    assert watch.get("/", host=f"localhost:{port}")[0] == 200


def _other_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses."""
    found = set()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.connect(("192.0.2.1", 9))           # TEST-NET: no packet is sent for a UDP connect
            found.add(udp.getsockname()[0])
    except OSError:
        pass
    try:
        found.update(info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET))
    except OSError:
        pass
    return sorted(a for a in found if not a.startswith("127.") and a != "0.0.0.0")


def test_everything_from_the_recipe_is_escaped_on_the_page():
    from sdbake.runner.watch.page import main
    from sdbake.runner.watch.session import Snapshot, StageRow
    hostile = '<img src=x onerror="alert(1)">'
    html = main(Snapshot(version=3, recipe=hostile, state="error", attempt=2, error=f"r.toml:3:1: {hostile}",
                         stages=(StageRow(hostile, "sample", "ran", 1.0, "abc"),),
                         images=(("save", 'a"><script>x</script>.png', 1),), previews=((hostile, 5, 0),)))
    assert "<script>" not in html and "onerror=" not in html.replace("onerror=&quot;", "")
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
    assert 'src="/files/a%22%3E%3Cscript%3Ex%3C/script%3E.png?v=1"' in html
