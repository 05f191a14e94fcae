"""A loss-curve PNG drawn with PIL alone (no plotting library in the project's dependencies)."""

import math

from PIL import Image, ImageDraw

WIDTH, HEIGHT, MARGIN = 900, 420, 60


def smooth(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def draw_panel(draw, box, title, series, log_scale=True):
    """One panel: each series is (label, colour, [(x, y)]); y on a log axis."""
    left, top, right, bottom = box
    draw.rectangle(box, outline=(0, 0, 0))
    draw.text((left, top - 18), title, fill=(0, 0, 0))
    points = [p for _, _, pts in series for p in pts]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    f = (lambda y: math.log10(max(y, 1e-6))) if log_scale else (lambda y: y)
    x0, x1 = min(xs), max(xs) or 1
    y0, y1 = f(min(ys)), f(max(ys))
    y1 = y1 if y1 > y0 else y0 + 1
    to_px = lambda x, y: (left + (x - x0) / (x1 - x0 or 1) * (right - left),
                          bottom - (f(y) - y0) / (y1 - y0) * (bottom - top))
    for k in range(5):  # y ticks
        value = y0 + (y1 - y0) * k / 4
        py = bottom - (bottom - top) * k / 4
        label = f"{10 ** value:.3g}" if log_scale else f"{value:.3g}"
        draw.text((left - 50, py - 6), label, fill=(80, 80, 80))
        draw.line([(left, py), (left + 4, py)], fill=(0, 0, 0))
    draw.text((left, bottom + 6), f"step {x0:.0f}", fill=(80, 80, 80))
    draw.text((right - 60, bottom + 6), f"step {x1:.0f}", fill=(80, 80, 80))
    for n, (label, colour, pts) in enumerate(series):
        draw.line([to_px(x, y) for x, y in pts], fill=colour, width=2)
        draw.text((right - 200, top + 6 + 14 * n), label, fill=colour)


def loss_plot(vae_history, decoder_history, unet_history, path):
    """vae_history, decoder_history: [(step, rec)]; unet_history: [(step, eps_mse, is_2x)].
    The decoder-only steps are drawn after the VAE's own."""
    image = Image.new("RGB", (WIDTH, 2 * HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    rec = [y for _, y in vae_history]
    decoder = [y for _, y in decoder_history]
    series = [("raw", (180, 180, 220), list(enumerate(rec + decoder))),
              ("encoder + decoder, mean of 25", (20, 40, 200), list(enumerate(smooth(rec, 25))))]
    if decoder:
        series.append(("decoder only, mean of 25", (20, 150, 60),
                       [(len(rec) + i, y) for i, y in enumerate(smooth(decoder, 25))]))
    draw_panel(draw, (MARGIN + 10, 30, WIDTH - 20, HEIGHT - 30), "VAE reconstruction loss (L1 + MSE)", series)
    base = [(s, y) for s, y, hires in unet_history if not hires]
    hires = [(s, y) for s, y, h in unet_history if h]
    series = [("64px, mean of 50", (20, 40, 200), list(zip([s for s, _ in base], smooth([y for _, y in base], 50))))]
    if hires:
        series.append(("128px, mean of 10", (220, 100, 20),
                       list(zip([s for s, _ in hires], smooth([y for _, y in hires], 10)))))
    draw_panel(draw, (MARGIN + 10, HEIGHT + 30, WIDTH - 20, 2 * HEIGHT - 30),
               "UNet epsilon MSE (unweighted, uniform timesteps)", series)
    image.save(path)


if __name__ == "__main__":
    # plot.py WORK_DIR OUT.png: redraw from the JSON histories that train.py / finetune_decoder.py keep
    import json
    import sys
    from pathlib import Path
    work = Path(sys.argv[1])
    read = lambda name: json.loads((work / name).read_text()) if (work / name).exists() else []
    decoder = [entry for name in sorted(p.name for p in work.glob("decoder_history*.json")) for entry in read(name)]
    loss_plot(read("vae_history.json"), decoder, read("unet_history.json"), sys.argv[2])
