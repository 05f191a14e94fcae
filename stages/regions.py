"""Regional prompts: a prompt that steers only part of the image (Latent Couple / two-shot semantics).

Each region's prompt is one more conditioning row of the guided denoiser, and its guidance term is
weighted per latent cell by the region's mask times its weight:
    D = uncond + cfg * (sum_j a_j (cond_j - uncond) + sum_r w_r M_r (cond_r - uncond))
where the base prompt's AND parts (weights a_j) cover the whole image. Latent Couple does the same
(it replaces each sub-prompt's prediction by cond * filter + uncond * (1 - filter) before A1111 adds
up the AND terms). The areas are not strict: every prediction sees the whole latent, so content
spills over a mask's edge.

Latent grid, as the extensions build it: a rect covers latent rows int(h * y0 / H) up to
int(h * y1 / H) (two-shot's and Regional Prompter's truncation of the division boundaries), the
same for columns; a mask image is resized to the latent grid with nearest-neighbour sampling
(Regional Prompter's mask mode); its grey level scales the weight (white 1, black 0).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from math import gcd

import torch
import torch.nn.functional as F
from sdbake.stages.images import mask_to_tensor, open_image
from sdbake.stages.prompts.parser import split_and


@dataclass(frozen=True)
class RegionCond:
    """One region at run time: its prompt, weight, and area in fractions of the sampled image
    (`box` = top, left, bottom, right) or as a mask (1, H, W) in [0, 1]."""
    prompt: str
    weight: float
    box: tuple[float, float, float, float] | None = None
    mask: torch.Tensor | None = None

    def latent_area(self, height: int, width: int, device=None) -> torch.Tensor:
        """(1, height, width) float32: the area on the latent grid (1 inside a rect; a mask's values)."""
        if self.box is not None:
            top, left, bottom, right = self.box
            area = torch.zeros(1, height, width)
            area[:, int(height * top):int(height * bottom), int(width * left):int(width * right)] = 1.0
        else:
            area = F.interpolate(self.mask[None].float(), size=(height, width), mode="nearest")[0]
        return area.to(device)

    def cropped(self, box_px: tuple[int, int, int, int], size: tuple[int, int]) -> RegionCond:
        """The region as seen in the crop box_px = (left, top, right, bottom) of an image of `size`
        (inpaint's `area = "masked"` samples that crop at full resolution)."""
        left, top, right, bottom = box_px
        width, height = size
        if self.mask is not None:
            full = F.interpolate(self.mask[None].float(), size=(height, width), mode="nearest")[0]
            return replace(self, mask=full[:, top:bottom, left:right])
        r_top, r_left, r_bottom, r_right = self.box

        def inside(fraction: float, pixels: int, start: int, end: int) -> float:
            return min(max((fraction * pixels - start) / (end - start), 0.0), 1.0)
        return replace(self, box=(inside(r_top, height, top, bottom), inside(r_left, width, left, right),
                                  inside(r_bottom, height, top, bottom), inside(r_right, width, left, right)))


def region_conds(regions, files: dict, size: tuple[int, int]) -> tuple[RegionCond, ...]:
    """The stage's `regions` params for an image of size (width, height); mask files from `files`."""
    width, height = size
    found = []
    for n, region in enumerate(regions or []):
        if region.rect is not None:
            x, y, w, h = region.rect
            box = (y / height, x / width, min(y + h, height) / height, min(x + w, width) / width)
            found.append(RegionCond(region.prompt, region.weight, box=box))
        else:
            mask = mask_to_tensor(open_image(files[f"regions.{n}.mask"], "region mask"))
            found.append(RegionCond(region.prompt, region.weight, mask=mask))
    return tuple(found)


def _division(start: int, end: int, side: int) -> tuple[int, str]:
    """two-shot's division count and position range for pixels [start, end) of `side` pixels."""
    unit = gcd(gcd(side, start), end)
    first, last = start // unit, end // unit
    return side // unit, f"{first}" if last == first + 1 else f"{first}-{last}"


def infotext_record(regions, base_parts: int, size: tuple[int, int], steps: int) -> dict:
    """What the extensions write. All rects: two-shot's `Latent Couple: "divisions=... positions=...
    weights=... end at step=N"`, one entry per AND part of the prompt "base AND region 1 AND ..."
    (the base parts covering 1:1 with weight 1). With mask files: Regional Prompter's mask-mode keys
    (its infotext does not hold the masks either; the embedded recipe does)."""
    if any(region.mask for region in regions):
        return {"RP Active": True, "RP Divide mode": "Mask", "RP Calc Mode": "Latent",
                "Region weights": ",".join(f"{region.weight:g}" for region in regions)}
    width, height = size
    divisions, positions, weights = ["1:1"] * base_parts, ["0:0"] * base_parts, ["1"] * base_parts
    for region in regions:
        x, y, w, h = region.rect
        rows, row_range = _division(y, min(y + h, height), height)
        cols, col_range = _division(x, min(x + w, width), width)
        for _ in split_and(region.prompt):
            divisions.append(f"{rows}:{cols}")
            positions.append(f"{row_range}:{col_range}")
            weights.append(f"{region.weight:g}")
    return {"Latent Couple": f"divisions={','.join(divisions)} positions={','.join(positions)} "
                             f"weights={','.join(weights)} end at step={steps}"}


def stage_regions(p, ctx, size: tuple[int, int]) -> tuple[RegionCond, ...]:
    """A sampling stage's regions for an image of size (width, height)."""
    return region_conds(p.regions, ctx.files, size)


def provenance_fields(p, prompts, size: tuple[int, int], steps: int) -> dict:
    """The infotext keys of a stage's regions, and (lower case, not infotext) their prompts for the
    save stage's prompt line; nothing without regions. `steps`: two-shot's "end at step", the last
    step the regions guide (a sample stage's `end`)."""
    if not p.regions:
        return {}
    base_parts = len(split_and(prompts[0])) if prompts else 1
    return {**infotext_record(p.regions, base_parts, size, steps), "regions": [r.prompt for r in p.regions]}
