"""A1111 v1.10 file name patterns (`[seed]-[prompt_spaces]`), parsed and checked without torch.

A pattern is text with `[key]` and `[key<arg><arg>]` parts, as A1111's `samples_filename_pattern`
(modules/images.py FilenameGenerator.apply): a part is what stands between `[` and `]` (no brackets
inside), its arguments are the trailing `<...>` groups, and keys match case-insensitively. A1111
leaves an unknown key as text; here it is an error, so a typo does not end up in thousands of names.
What each key renders to is in stages/output/a1111_names.py.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

# key -> (fewest arguments, most arguments (None: any), what it gives), A1111 v1.10's replacements.
KEYS: dict[str, tuple[int, int | None, str]] = {
    "basename": (0, 0, "`img` (A1111's name for a txt2img/img2img save)"),
    "seed": (0, 0, "this image's seed"),
    "seed_first": (0, 0, "the batch's first seed"),
    "seed_last": (0, 0, "the batch's last seed (nothing, and the text before it, for one image)"),
    "steps": (0, 0, "sampling steps"),
    "cfg": (0, 0, "CFG scale"),
    "width": (0, 0, "image width"),
    "height": (0, 0, "image height"),
    "styles": (0, 0, "`None` (sdbake has no styles)"),
    "sampler": (0, 0, "A1111 sampler label"),
    "sampler_scheduler": (0, 0, "sampler label and schedule type"),
    "scheduler": (0, 0, "schedule type"),
    "model_hash": (0, 0, "checkpoint short hash"),
    "model_name": (0, 0, "checkpoint file name without extension"),
    "date": (0, 0, "run date YYYY-MM-DD"),
    "datetime": (0, 2, "run time, `[datetime<%Y%m%d><Asia/Tokyo>]`"),
    "job_timestamp": (0, 0, "run time YYYYMMDDhhmmss"),
    "prompt_hash": (0, 1, "sha256 of the prompt, 8 hex or <n>"),
    "negative_prompt_hash": (0, 1, "sha256 of the negative prompt"),
    "full_prompt_hash": (0, 1, "sha256 of prompt, space, negative"),
    "prompt": (0, 0, "prompt, spaces as _"),
    "prompt_no_styles": (0, 0, "prompt (no styles to remove)"),
    "prompt_spaces": (0, 0, "prompt with its spaces"),
    "prompt_words": (0, 0, "the prompt's first 8 words"),
    "batch_number": (0, 0, "image number in the batch (nothing for one image)"),
    "batch_size": (0, 0, "images in the batch"),
    "generation_number": (0, 0, "image number in the job (nothing for one image)"),
    "hasprompt": (0, None, "`[hasprompt<cat|nocat><dog>]`: the words the prompt has, else the defaults"),
    "clip_skip": (0, 0, "CLIP skip"),
    "denoising": (0, 0, "denoising strength (nothing in txt2img)"),
    "vae_filename": (0, 0, "VAE file name without extension, `NoneType` for the checkpoint's own"),
    "none": (0, 0, "nothing (a pattern of only the number)"),
}
# A1111 keys sdbake cannot render: refused with the reason.
REFUSED: dict[str, str] = {
    "user": "[user] is the web UI's logged-in user; sdbake has no login",
    "image_hash": "[image_hash] hashes the pixels, known only once the image is made; use [seed] or "
                  "[full_prompt_hash] (or a `path` template)",
}
HASH_KEYS = ("prompt_hash", "negative_prompt_hash", "full_prompt_hash")

# A1111's re_pattern and re_pattern_arg: a part between brackets; `<arg>` groups at its end.
_PART = re.compile(r"(.*?)(?:\[([^\[\]]+)\]|$)")
_ARG = re.compile(r"(.*)<([^>]*)>$")


@dataclass(frozen=True)
class PatternPart:
    """Literal text, then a key (lowercased; None at the end) with its arguments."""
    text: str
    key: str | None
    args: tuple[str, ...] = ()


def known_keys() -> str:
    return ", ".join(KEYS)


def parse_pattern(pattern: str, *, folder: bool = False) -> list[PatternPart]:
    """The parts of a pattern; ValueError names the first key that is unknown or misused."""
    if any(c in pattern for c in "\n\r"):
        raise ValueError("a pattern is one line")
    parts = []
    for match in _PART.finditer(pattern):
        text, inner = match.groups()
        if not folder and any(sep in text for sep in "/\\"):
            raise ValueError(f"`{text}`: a pattern names a file, not folders (A1111's directory name pattern "
                             "is `pattern_dir`)")
        if inner is None:
            if text:
                parts.append(PatternPart(text, None))
            continue
        name, args = inner, []
        while (arg := _ARG.match(name)) is not None:
            name = arg.group(1)
            args.insert(0, arg.group(2))
        key = name.lower()
        _check(key, name, tuple(args))
        parts.append(PatternPart(text, key, tuple(args)))
    return parts


def _check(key: str, spelled: str, args: tuple[str, ...]) -> None:
    if key in REFUSED:
        raise ValueError(REFUSED[key])
    if key not in KEYS:
        hint = difflib.get_close_matches(key, KEYS, n=1)
        raise ValueError(f"unknown key [{spelled}]" + (f" (did you mean [{hint[0]}]?)" if hint else "")
                         + f"; A1111 v1.10 keys: {known_keys()}")
    fewest, most, _ = KEYS[key]
    if len(args) < fewest or (most is not None and len(args) > most):
        allowed = "no <argument>" if most == 0 else f"at most {most} <argument>s"
        raise ValueError(f"[{spelled}] takes {allowed} (got {len(args)})")
    if key in HASH_KEYS and args and args[0] != "":
        try:
            int(args[0])
        except ValueError:
            raise ValueError(f"[{spelled}<{args[0]}>]: the hash length must be a whole number") from None
    if key == "datetime" and len(args) == 2 and args[1] != "":
        time_zone(args[1])


def time_zone(name: str):
    """An IANA time zone (A1111 uses pytz's names; an unknown one falls back to local time there,
    and is an error here)."""
    import zoneinfo
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone `{name}` (IANA names such as `UTC`, `Europe/Paris`, "
                         "`Asia/Tokyo`)") from None
