"""Render A1111 v1.10 file name patterns as its FilenameGenerator does (modules/images.py), from the facts
sdbake knows about an image, and A1111's `00000-` sequence number (get_next_sequence_number).

Reimplemented from A1111's behaviour:
- each key's value is text; a value that is "nothing and skip previous text" (`[batch_number]` of a
  one-image batch, `[seed_last]`, `[denoising]` in txt2img) drops itself and the literal text before it;
- prompt-derived values go through sanitize_filename_part: spaces to `_` for `[prompt]`, the characters
  `#<>:"/\\|?*`, newline, CR and tab to `_`, leading spaces stripped, cut to 128 characters, then
  trailing spaces and dots stripped;
- `[prompt_words]` is the first 8 words (A1111's default `directories_max_prompt_words`) between runs of
  whitespace and ASCII punctuation, `empty` when there is none;
- times: `[date]` is %Y-%m-%d, `[datetime]` %Y%m%d%H%M%S unless `<format>` says otherwise, in the
  `<time zone>` given (else local time); sdbake takes them from the run's start, once per run, so all
  images of a run agree (A1111 reads the clock per image).
"""
from __future__ import annotations

import hashlib
import os
import re
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sdbake.schemas.a1111_pattern import PatternPart, parse_pattern, time_zone

MAX_PART_CHARS = 128                 # A1111's --filenames-max-length default
PROMPT_WORDS = 8                     # A1111's directories_max_prompt_words default
DEFAULT_TIME_FORMAT = "%Y%m%d%H%M%S"
_INVALID = '#<>:"/\\|?*\n\r\t'
_NON_LETTERS = re.compile(r"[\s" + re.escape(string.punctuation) + r"]+")
SKIP = object()                      # A1111's NOTHING_AND_SKIP_PREVIOUS_TEXT


def sanitize_filename_part(text: str, replace_spaces: bool = True) -> str:
    """A1111's sanitize_filename_part: one value made safe to stand inside a file name."""
    if replace_spaces:
        text = text.replace(" ", "_")
    text = text.translate({ord(c): "_" for c in _INVALID})
    return text.lstrip(" ")[:MAX_PART_CHARS].rstrip(" .")


@dataclass
class ImageFacts:
    """What a pattern can name about one image (A1111's `p` and the image)."""
    seed: int
    seeds: list[int]                  # the batch's seeds
    batch_index: int
    prompt: str                       # this image's prompt (wildcards picked, extra-network tags removed)
    prompt_typed: str = ""            # the prompt as written (A1111's p.prompt)
    negative_typed: str = ""          # the negative prompt as written (p.negative_prompt)
    steps: int = 0
    cfg: float = 0.0
    width: int = 0
    height: int = 0
    sampler: str = ""                 # A1111 label, e.g. `DPM++ 2M`
    schedule_type: str = ""           # A1111 label, e.g. `Karras`
    model_hash: str = ""
    model_name: str = ""
    clip_skip: int = 1
    denoising: float | None = None
    vae_file: str | None = None       # the separate VAE's file name; None: the checkpoint's own
    now: datetime = field(default_factory=datetime.now)
    iteration: int = 0                # the batch's place in an `n_iter` job (A1111's p.iteration)
    n_iter: int = 1
    all_seeds: list[int] = field(default_factory=list)    # the job's seeds (p.all_seeds); empty: the batch's


def _hash(text: str, args: tuple[str, ...]) -> str:
    length = int(args[0]) if args and args[0] != "" else 8
    return hashlib.sha256(text.encode()).hexdigest()[0:length]


def _datetime(facts: ImageFacts, args: tuple[str, ...]) -> str:
    time_format = args[0] if args and args[0] != "" else DEFAULT_TIME_FORMAT
    zone = time_zone(args[1]) if len(args) > 1 and args[1] != "" else None
    moment = facts.now.astimezone(zone)
    try:
        formatted = moment.strftime(time_format)
    except (ValueError, TypeError):       # as A1111: a format strftime refuses gives the default one
        formatted = moment.strftime(DEFAULT_TIME_FORMAT)
    return sanitize_filename_part(formatted, replace_spaces=False)


def _prompt_words(prompt: str) -> str:
    words = [word for word in _NON_LETTERS.split(prompt) if word] or ["empty"]
    return sanitize_filename_part(" ".join(words[:PROMPT_WORDS]), replace_spaces=False)


def _hasprompt(prompt: str, args: tuple[str, ...]) -> str:
    """`<word|default>` per argument: the word (lowercased) if the prompt contains it, else the default."""
    lower, found = prompt.lower(), ""
    for arg in args:
        if arg == "":
            continue
        expected, _bar, default = arg.partition("|")
        expected = expected.lower()
        if expected in lower:
            found += expected
        else:
            found += default.split("|")[0]
    return sanitize_filename_part(found)


def _vae_filename(name: str | None) -> str:
    """As A1111: `NoneType` without a separate VAE; else the name up to its first dot (after a leading one)."""
    if name is None:
        return "NoneType"
    pieces = name.split(".")
    return pieces[1] if len(pieces) > 1 and pieces[0] == "" else pieces[0]


def _one_image(facts: ImageFacts) -> bool:
    """A batch of one (A1111 tests p.batch_size == 1, whatever the batch count)."""
    return len(facts.seeds) <= 1


def _job_seeds(facts: ImageFacts) -> list[int]:
    return facts.all_seeds or facts.seeds


def _generation_number(facts: ImageFacts) -> object:
    """The image's number in the whole job: batch * batch size + index in the batch + 1."""
    if facts.n_iter == 1 and _one_image(facts):
        return SKIP
    return facts.iteration * len(facts.seeds) + facts.batch_index + 1


_VALUES: dict[str, Callable[[ImageFacts, tuple[str, ...]], object]] = {
    "basename": lambda f, a: "img",
    "seed": lambda f, a: f.seed,
    "seed_first": lambda f, a: f.seed if _one_image(f) else _job_seeds(f)[0],
    "seed_last": lambda f, a: SKIP if _one_image(f) else _job_seeds(f)[-1],
    "steps": lambda f, a: f.steps,
    "cfg": lambda f, a: f.cfg,
    "width": lambda f, a: f.width,
    "height": lambda f, a: f.height,
    "styles": lambda f, a: "None",
    "sampler": lambda f, a: sanitize_filename_part(f.sampler, replace_spaces=False),
    "sampler_scheduler": lambda f, a: sanitize_filename_part(f"{f.sampler} {f.schedule_type.capitalize()}",
                                                            replace_spaces=False),
    "scheduler": lambda f, a: sanitize_filename_part(f.schedule_type.capitalize(), replace_spaces=False),
    "model_hash": lambda f, a: f.model_hash,
    "model_name": lambda f, a: sanitize_filename_part(f.model_name, replace_spaces=False),
    "date": lambda f, a: f.now.strftime("%Y-%m-%d"),
    "datetime": _datetime,
    "job_timestamp": lambda f, a: f.now.strftime(DEFAULT_TIME_FORMAT),
    "prompt_hash": lambda f, a: _hash(f.prompt, a),
    "negative_prompt_hash": lambda f, a: _hash(f.negative_typed, a),
    "full_prompt_hash": lambda f, a: _hash(f"{f.prompt_typed} {f.negative_typed}", a),
    "prompt": lambda f, a: sanitize_filename_part(f.prompt),
    "prompt_no_styles": lambda f, a: sanitize_filename_part(f.prompt, replace_spaces=False),
    "prompt_spaces": lambda f, a: sanitize_filename_part(f.prompt, replace_spaces=False),
    "prompt_words": lambda f, a: _prompt_words(f.prompt),
    "batch_number": lambda f, a: SKIP if _one_image(f) else f.batch_index + 1,
    "batch_size": lambda f, a: len(f.seeds),
    "generation_number": lambda f, a: _generation_number(f),
    "hasprompt": lambda f, a: _hasprompt(f.prompt, a),
    "clip_skip": lambda f, a: f.clip_skip,
    "denoising": lambda f, a: f.denoising if f.denoising else SKIP,
    "vae_filename": lambda f, a: _vae_filename(f.vae_file),
    "none": lambda f, a: "",
}


def render_parts(parts: list[PatternPart], facts: ImageFacts) -> str:
    rendered = ""
    for part in parts:
        if part.key is None:
            rendered += part.text
            continue
        value = _VALUES[part.key](facts, part.args)
        if value is SKIP:                   # the value, and the text before it, are left out
            continue
        rendered += part.text + str(value)
    return rendered


def render_pattern(pattern: str, facts: ImageFacts, *, folder: bool = False) -> str:
    return render_parts(parse_pattern(pattern, folder=folder), facts)


def file_decoration(rendered: str, number: bool) -> str:
    """What follows the sequence number: `-` and the rendered pattern (just the number when it is empty)."""
    return f"-{rendered}" if number and rendered else rendered


def leading_number(name: str) -> int | None:
    """A1111's get_next_sequence_number reads each name's part before its first `-` (extension removed)."""
    stem = os.path.splitext(name)[0]
    try:
        return int(stem.split("-")[0])
    except ValueError:
        return None


def next_sequence_number(names: Iterable[str]) -> int:
    """One more than the highest leading number of the folder's entries; 0 in a folder without one."""
    return max((n for n in map(leading_number, names) if n is not None), default=-1) + 1


def numbered(number: int, decoration: str) -> str:
    return f"{number:05}{decoration}"
