"""The `sdbake check` HTML report: one self-contained page (images inline as data URIs).

A summary table first, then per case: golden / new / amplified difference side by side, the
metrics, where the largest difference is, and the recipe diff when the golden came from another
recipe. A small script marks the page once every image has loaded, for the browser test and for
anyone debugging a broken report.
"""
from __future__ import annotations

import base64
import html
import math
from pathlib import Path

from sdbake.runner.check.metrics import heatmap, load_pixels, png_bytes
from sdbake.runner.check.run import Case, CheckResult
from sdbake.schemas.errors import SdbakeError

MIME_BY_SUFFIX = {".png": "image/png", ".webp": "image/webp", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
REPORT_NAME = "index.html"

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1b1b1b; background: #fafafa; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin: 0 0 8px; }
table.summary { border-collapse: collapse; margin-bottom: 24px; }
table.summary td, table.summary th { border: 1px solid #ccc; padding: 4px 8px; text-align: left; }
.status { font-weight: bold; text-transform: uppercase; }
.pass { color: #17752b; } .fail, .error { color: #b3261e; } .added, .updated { color: #1f5fbf; }
section.case { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 12px; margin: 16px 0; }
.images { display: flex; gap: 16px; flex-wrap: wrap; }
figure { margin: 0; } figcaption { font-size: 12px; color: #555; }
figure img { width: 256px; height: auto; image-rendering: pixelated; border: 1px solid #bbb; background: #eee; }
pre { background: #f3f3f3; padding: 8px; overflow-x: auto; font-size: 12px; }
"""

# Sets data-images-loaded on <body>: "all" when every <img> decoded, else "k/n".
SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var loaded = images.filter(function (img) { return img.complete && img.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images-loaded", loaded === images.length ? "all" : loaded + "/" + images.length);
});
"""


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _mime(name: str) -> str:
    return MIME_BY_SUFFIX.get(Path(name).suffix.lower(), "image/png")


def _figure(caption: str, data: bytes, mime: str) -> str:
    return (f'<figure><img alt="{html.escape(caption)}" src="{data_uri(data, mime)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _number(value: float, digits: int) -> str:
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def _difference_figure(case: Case) -> str:
    """The amplified difference heatmap, when both images read and have one size."""
    if case.golden_bytes is None or case.new_bytes is None or case.golden_bytes == case.new_bytes:
        return ""
    try:
        golden = load_pixels(case.golden_bytes, "golden")
        new = load_pixels(case.new_bytes, "new")
    except SdbakeError:
        return ""
    if golden.shape != new.shape:
        return ""
    location = case.metrics.location if case.metrics else None
    caption = "difference (amplified; ringed: largest)"
    return _figure(caption, png_bytes(heatmap(golden, new, location)), "image/png")


def _metrics_rows(case: Case) -> str:
    rows = []
    if case.metrics:
        m = case.metrics
        rows += [("max abs diff", f"{m.max_abs_diff} (0-255)"),
                 ("largest difference at", f"pixel x={m.location[0]}, y={m.location[1]}"),
                 ("pixels that differ", str(m.differing_pixels)),
                 ("mean abs diff", f"{m.mean_abs_diff:.4f} (0-255)"),
                 ("PSNR", f"{_number(m.psnr, 2)} dB"), ("SSIM", _number(m.ssim, 4))]
    if case.comparison:
        rows.append(("comparison", case.comparison))
    elif case.tolerances:
        rows.append(("tolerances", case.tolerances.describe()))
    if case.golden_path:
        rows.append(("golden", str(case.golden_path)))
    rows.append(("recipe", case.recipe))
    return "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)


def case_section(case: Case, anchor: str) -> str:
    figures = []
    if case.golden_bytes is not None:
        figures.append(_figure("golden", case.golden_bytes, _mime(case.output)))
    if case.new_bytes is not None:
        figures.append(_figure("new render", case.new_bytes, _mime(case.output)))
    difference = _difference_figure(case)
    if difference:
        figures.append(difference)
    parts = [f'<section class="case" id="{anchor}">',
             f'<h2><span class="status {case.status}">{case.status}</span> {html.escape(case.title)}</h2>',
             f"<p>{html.escape(case.message)}</p>" if "\n" not in case.message
             else f"<pre>{html.escape(case.message)}</pre>"]
    if figures:
        parts.append(f'<div class="images">{"".join(figures)}</div>')
    parts.append(f'<table class="metrics">{_metrics_rows(case)}</table>')
    parts += [f"<p>note: {html.escape(note)}</p>" for note in case.notes]
    if case.recipe_diff:
        parts.append(f"<h3>recipe changed since the golden</h3><pre>{html.escape(case.recipe_diff)}</pre>")
    parts.append("</section>")
    return "\n".join(parts)


def _one_line(message: str, limit: int = 160) -> str:
    text = " ".join(message.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def summary_table(cases: list[Case]) -> str:
    header = "".join(f"<th>{name}</th>" for name in ("status", "case", "max abs diff", "at (x, y)", "PSNR dB",
                                                      "SSIM", "message"))
    rows = [f"<tr>{header}</tr>"]
    for index, case in enumerate(cases):
        m = case.metrics
        cells = [f'<span class="status {case.status}">{case.status}</span>',
                 f'<a href="#case-{index}">{html.escape(case.title)}</a>',
                 str(m.max_abs_diff) if m else "", f"{m.location[0]}, {m.location[1]}" if m else "",
                 _number(m.psnr, 2) if m else "", _number(m.ssim, 4) if m else "",
                 html.escape(_one_line(case.message))]
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    return f'<table class="summary">{"".join(rows)}</table>'


def render_html(result: CheckResult) -> str:
    failed = len(result.failed)
    headline = (f"{len(result.cases)} cases: {len(result.cases) - failed} passed, {failed} failed "
                f"({result.seconds:.1f} s)")
    stale = "".join(f"<li>{html.escape(str(p))}</li>" for p in result.stale)
    body = [f"<h1>sdbake check</h1><p>{html.escape(headline)}</p>", summary_table(result.cases),
            f"<p>Goldens no render produced:</p><ul>{stale}</ul>" if stale else ""]
    body += [case_section(case, f"case-{index}") for index, case in enumerate(result.cases)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>sdbake check</title>"
            f"<style>{STYLE}</style></head>\n<body>\n" + "\n".join(body)
            + f"\n<script>{SCRIPT}</script>\n</body></html>\n")


def write_report(result: CheckResult, folder: Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / REPORT_NAME
    path.write_text(render_html(result), encoding="utf-8")
    return path
