"""The check report's content (self-contained HTML) and its JUnit XML. The browser test is apart."""
from __future__ import annotations

import base64
import io
import re
import xml.etree.ElementTree as ET

import numpy as np
from sdbake.runner.check.junit import write_junit
from sdbake.runner.check.metrics import Tolerances, compare
from sdbake.runner.check.report import render_html, write_report
from sdbake.runner.check.run import Case, CheckResult


def png(pixels: np.ndarray) -> bytes:
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "PNG")
    return buffer.getvalue()


def sample_result() -> CheckResult:
    golden = np.zeros((16, 16, 3), np.uint8)
    new = golden.copy()
    new[4, 9] = (200, 10, 10)
    failing = Case("r.toml", "r", "r/1.png", status="fail", message="max abs diff 200 > 0 at pixel (x=9, y=4)",
                   golden_bytes=png(golden), new_bytes=png(new), metrics=compare(golden, new),
                   tolerances=Tolerances(), recipe_diff="--- a\n+++ b\nstages:\n    cfg: 5.0 -> 11.5\n", seconds=1.5)
    passing = Case("r.toml", "r", "r/2.png", status="pass", message="identical bytes", golden_bytes=png(golden),
                   new_bytes=png(golden), seconds=1.5)
    broken = Case("bad.toml", "bad.toml", message="invalid recipe:\nbad.toml:3:1: unknown key `stepz`")
    return CheckResult([failing, passing, broken], stale=[], seconds=3.0)


def test_report_is_one_page_with_inline_images(tmp_path):
    path = write_report(sample_result(), tmp_path / "report")
    page = path.read_text(encoding="utf-8")
    sources = re.findall(r'<img[^>]* src="([^"]+)"', page)
    assert len(sources) == 5                       # golden, new, difference; golden, new
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    for source in sources:                         # every inline image decodes
        from PIL import Image
        Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))).verify()
    assert list(tmp_path.joinpath("report").iterdir()) == [path]


def test_report_shows_metrics_location_recipe_diff_and_summary():
    page = render_html(sample_result())
    summary = page[page.index('<table class="summary">'):page.index("</table>")]
    assert summary.count("<tr>") == 4 and ">fail<" in summary and ">error<" in summary
    assert "pixel x=9, y=4" in page and "PSNR" in page and "SSIM" in page
    assert "recipe changed since the golden" in page and "cfg: 5.0 -&gt; 11.5" in page
    assert "unknown key `stepz`" in page


def test_junit_counts_failures_and_errors(tmp_path):
    path = write_junit(sample_result(), tmp_path / "junit.xml")
    suite = ET.parse(path).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "1")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["r/1.png", "r/2.png", "bad.toml"]
    assert "x=9, y=4" in cases[0].find("failure").get("message")
    assert cases[1].find("failure") is None and cases[2].find("error") is not None
