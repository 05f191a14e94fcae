"""A1111 file name patterns in save stages (`pattern = "[seed]-[prompt_spaces]"`), checked against names
derived by hand from A1111 v1.10's modules/images.py: `sanitize_filename_part` (replace_spaces,
`invalid_filename_chars = '#<>:"/\\|?*\\n\\r\\t'`, lstrip ' ', cut to `max_filename_part_length` = 128
(the --filenames-max-length default), rstrip ' .'), `FilenameGenerator.replacements` and `.apply`
(`re_pattern`, `re_pattern_arg`, case-insensitive keys, NOTHING_AND_SKIP_PREVIOUS_TEXT), `prompt_words`
(`re_nonletters`, `directories_max_prompt_words` = 8, `empty`), `datetime` (default %Y%m%d%H%M%S,
`<format><time zone>`), `string_hash` (8 hex by default), `get_vae_filename`, `get_next_sequence_number`
and `save_image` (`f"{basecount + i:05}"`, `-` before the decoration, `directories_filename_pattern`
with lstrip(' ') and rstrip('\\ /')).
Sources read: the index holds github:AUTOMATIC1111/stable-diffusion-webui's modules/images.py only in a
2022 version (apply_filename_pattern, get_next_sequence_number); the v1.10 FilenameGenerator (the key
table above, get_sampler_scheduler, string_hash, get_vae_filename) was read in the stored Forge copy of
that file, which is v1.10's plus the Forge-only keys dcfg, shift and elapsed_time (left out here).
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import pytest
from recipe_helpers import txt2img, write
from sdbake.stages.output.a1111_names import (
    ImageFacts,
    next_sequence_number,
    render_pattern,
    sanitize_filename_part,
)

NOW = datetime(2024, 7, 27, 13, 5, 9)           # naive: local time, as A1111's datetime.now()
UTC_NOW = NOW.replace(tzinfo=timezone.utc)
PROMPT = "masterpiece, a cat: on a mat?"


def facts(**changes) -> ImageFacts:
    """One txt2img image as A1111 v1.10 would have it: seed 1234, 20 steps, cfg 7.0, 512x768, DPM++ 2M
    Karras, checkpoint `v1-5-pruned-emaonly` (hash 6ce0161689), no VAE file, clip skip 1."""
    return ImageFacts(**{"seed": 1234, "seeds": [1234], "batch_index": 0, "prompt": PROMPT,
                         "prompt_typed": PROMPT, "negative_typed": "blurry", "steps": 20, "cfg": 7.0,
                         "width": 512, "height": 768, "sampler": "DPM++ 2M", "schedule_type": "Karras",
                         "model_hash": "6ce0161689", "model_name": "v1-5-pruned-emaonly", "clip_skip": 1,
                         "denoising": None, "vae_file": None, "now": NOW, **changes})


JOB_PATTERN = "[generation_number]-[seed_first]-[seed_last]-[seed]-[batch_number]"


def job(iteration: int, index: int, *, batch_size: int = 2, n_iter: int = 3, **changes) -> dict:
    """Image `index` of batch `iteration` of an A1111 job of n_iter batches, seed 1234 (no variation seed)."""
    first = 1234 + iteration * batch_size
    seeds = list(range(first, first + batch_size))
    return {"seeds": seeds, "seed": seeds[index], "batch_index": index, "iteration": iteration, "n_iter": n_iter,
            "all_seeds": list(range(1234, 1234 + n_iter * batch_size)), **changes}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# (pattern, fact changes) -> the name A1111 v1.10's FilenameGenerator.apply returns, derived by hand.
A1111_TABLE = [
    ("[seed]-[prompt_spaces]", {}, "1234-masterpiece, a cat_ on a mat_"),
    ("[seed]-[prompt]", {}, "1234-masterpiece,_a_cat__on_a_mat_"),
    ("[SEED]-[Prompt_Words]", {}, "1234-masterpiece a cat on a mat"),
    ("[seed_first]-[seed_last]", {}, "1234"),                        # seed_last skips its `-` for one image
    ("[seed_first]-[seed_last]", {"seeds": [1234, 1235, 1236], "batch_index": 1, "seed": 1235}, "1234-1236"),
    ("[steps]_[cfg]_[width]x[height]", {}, "20_7.0_512x768"),
    ("[styles]", {}, "None"),
    ("[sampler]", {}, "DPM++ 2M"),
    ("[sampler_scheduler]", {}, "DPM++ 2M Karras"),
    ("[scheduler]", {"schedule_type": "SGM Uniform"}, "Sgm uniform"),    # str.capitalize, as A1111
    ("[model_hash]-[model_name]", {}, "6ce0161689-v1-5-pruned-emaonly"),
    ("[date]", {}, "2024-07-27"),
    ("[datetime]", {}, "20240727130509"),
    ("[datetime<%Y-%m-%d_%H:%M>]", {}, "2024-07-27_13_05"),          # the value is sanitized
    ("[datetime<%H%M><Asia/Tokyo>]", {"now": UTC_NOW}, "2205"),
    ("[datetime<><UTC>]", {"now": UTC_NOW}, "20240727130509"),                      # empty format: the default
    ("[job_timestamp]", {}, "20240727130509"),
    ("[prompt_hash]", {}, sha(PROMPT)[:8]),
    ("[prompt_hash<12>]", {}, sha(PROMPT)[:12]),
    ("[negative_prompt_hash]", {}, sha("blurry")[:8]),
    ("[full_prompt_hash<4>]", {}, sha(PROMPT + " blurry")[:4]),
    ("[prompt_no_styles]", {}, "masterpiece, a cat_ on a mat_"),
    ("[seed]-[batch_number]", {}, "1234"),                            # one image: `-` and the number go
    ("[seed]-[batch_number]", {"seeds": [1234, 1235], "batch_index": 1, "seed": 1235}, "1235-2"),
    ("[batch_size]", {"seeds": [5, 6, 7]}, "3"),
    ("x[generation_number]", {}, ""),                                 # skipped with the text before it
    ("x[generation_number]", {"seeds": [1, 2], "batch_index": 0, "seed": 1}, "x1"),
    ("[hasprompt<cat|nocat><dog|nodog><MAT>]", {}, "catnodogmat"),
    ("[hasprompt<horse>]", {}, ""),
    ("[clip_skip]", {"clip_skip": 2}, "2"),
    ("a-[denoising]", {}, ""),                                        # txt2img: no denoising strength
    ("a-[denoising]", {"denoising": 0.45}, "a-0.45"),
    ("[vae_filename]", {}, "NoneType"),
    ("[vae_filename]", {"vae_file": "vae-ft-mse-840000-ema-pruned.safetensors"}, "vae-ft-mse-840000-ema-pruned"),
    ("[vae_filename]", {"vae_file": "sdxl_vae.0.9.safetensors"}, "sdxl_vae"),
    ("[vae_filename]", {"vae_file": ".hidden.pt"}, "hidden"),
    ("[none]", {}, ""),
    ("[basename]", {}, "img"),
    ("[]-[seed]", {}, "[]-1234"),                                     # empty brackets are text
    *[(JOB_PATTERN, job(iteration, index), expected) for iteration, index, expected in [
        # n_iter = 3, batch_size = 2, seed 1234: p.all_seeds = 1234..1239 (seed + x over the job), and
        # generation_number = p.iteration * p.batch_size + p.batch_index + 1
        (0, 0, "1-1234-1239-1234-1"), (0, 1, "2-1234-1239-1235-2"), (1, 0, "3-1234-1239-1236-1"),
        (1, 1, "4-1234-1239-1237-2"), (2, 0, "5-1234-1239-1238-1"), (2, 1, "6-1234-1239-1239-2")]],
    # batch_size = 1, n_iter = 3, third batch: seed_first is the image's seed and seed_last is skipped (A1111
    # tests p.batch_size == 1), generation_number is not (it tests n_iter == 1 and batch_size == 1)
    (JOB_PATTERN, job(2, 0, batch_size=1), "3-1236-1236"),
    # a variation seed: every image keeps the seed, so p.all_seeds is 1234 six times
    (JOB_PATTERN, job(1, 1, all_seeds=[1234] * 6, seeds=[1234, 1234], seed=1234), "4-1234-1234-1234-2"),
]


@pytest.mark.parametrize(("pattern", "changes", "expected"), A1111_TABLE)
def test_pattern_renders_as_a1111_v1_10(pattern, changes, expected):
    assert render_pattern(pattern, facts(**changes)) == expected


def test_prompt_of_300_characters_is_cut_to_128_then_trailing_spaces_and_dots_go():
    prompt = ("word " * 25) + "end." + "x" * 300           # char 126-128 are `end`: nothing to strip
    assert len(render_pattern("[prompt_spaces]", facts(prompt=prompt))) == 128
    dotted = "a" * 120 + " . . .  " + "b" * 200                 # the cut falls on spaces and dots
    assert render_pattern("[prompt_spaces]", facts(prompt=dotted)) == "a" * 120


def test_prompt_words_of_only_punctuation_is_empty():
    assert render_pattern("[prompt_words]", facts(prompt="(((...))), !!! ??")) == "empty"
    assert render_pattern("[prompt_words]", facts(prompt="")) == "empty"


def test_prompt_words_keeps_eight_words_and_splits_on_punctuation():
    prompt = "one,two (three:1.2) four_five six-seven eight nine ten"
    # `_` and `-` are punctuation too; weights' digits are words (A1111 gives `three 1 2`)
    assert render_pattern("[prompt_words]", facts(prompt=prompt)) == "one two three 1 2 four five six"


@pytest.mark.parametrize(("text", "expected"), [
    ("a cat.", "a_cat"), ("a cat . . .", "a_cat_._._"), ("   lead", "___lead"), ('#<>:"/\\|?*', "__________"),
    ("tab\there\nline\rcr", "tab_here_line_cr"), ("ünïcödé 猫 café", "ünïcödé_猫_café"), ("...", ""),
])
def test_sanitize_filename_part_corner_cases(text, expected):
    assert sanitize_filename_part(text) == expected


def test_windows_invalid_characters_in_prompt_spaces():
    assert render_pattern("[prompt_spaces]", facts(prompt='a <b>: "c"/d\\e|f?g*h #1')) == \
        "a _b__ _c__d_e_f_g_h _1"


@pytest.mark.parametrize(("names", "expected"), [
    ([], 0), (["00000-1-a.png", "00007-2.png", "notes.txt"], 8), (["00012.png"], 13),
    (["00003-x.png", "folder-99"], 4), (["12-a.png", "0009-b.jpg"], 13), (["-5.png", ".hidden"], 0),
])
def test_next_sequence_number_follows_the_highest_leading_number(names, expected):
    assert next_sequence_number(names) == expected


# ---- validate ---------------------------------------------------------------------------------------

def _validate(tmp_path, save_lines: str):
    recipe = write(tmp_path, "r.toml", txt2img(tmp_path / "model", path="x.png").replace(
        'path = "x.png"\n', save_lines))
    return recipe


def test_unknown_key_is_one_validate_error_with_position_and_known_keys(tmp_path, capsys):
    from sdbake.runner.cli import main
    _validate(tmp_path, 'pattern = "[seed]-[promt_words]"\n')
    assert main(["validate", str(tmp_path / "r.toml")]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if "pattern" in line]
    assert len(lines) == 1
    assert lines[0].startswith(f"{tmp_path / 'r.toml'}:")
    assert ":27:1: stages[2].pattern: unknown key [promt_words] (did you mean [prompt_words]?)" in lines[0]
    assert "A1111 v1.10 keys: basename, seed, seed_first" in lines[0] and "vae_filename, none" in lines[0]


@pytest.mark.parametrize(("lines", "message"), [
    ('pattern = "[seed<3>]"\n', "[seed] takes no <argument> (got 1)"),
    ('pattern = "[prompt_hash<x>]"\n', "the hash length must be a whole number"),
    ('pattern = "[datetime<%H><Mars/Olympus>]"\n', "unknown time zone `Mars/Olympus`"),
    ('pattern = "[user]"\n', "sdbake has no login"),
    ('pattern = "[date]/[seed]"\n', "use `pattern_dir`"),
    ('pattern = "[seed]"\npath = "a.png"\n', "not both"),
    ('path = "a.png"\nnumber = false\n', "go with `pattern`"),
    ('pattern = "[seed]"\npattern_dir = "[nope]"\n', "unknown key [nope]"),
])
def test_misused_patterns_are_validate_errors(tmp_path, capsys, lines, message):
    from sdbake.runner.cli import main
    _validate(tmp_path, lines)
    assert main(["validate", str(tmp_path / "r.toml")]) == 1
    assert message.replace("use `pattern_dir`", "is `pattern_dir`") in capsys.readouterr().err


# ---- sdbake run ---------------------------------------------------------------------------------------

def _pattern_recipe(tmp_path, model, pattern_lines: str, batch_size: int = 2):
    return write(tmp_path, "r.toml", txt2img(model, steps=3, batch_size=batch_size, path="x.png").replace(
        'path = "x.png"\n', pattern_lines))


def test_run_writes_a1111_names_continuing_the_sequence_after_existing_files(tmp_path, tiny_model_dir):
    pytest.importorskip("torch")
    from sdbake.runner.api import render
    folder = tmp_path / "outputs" / "tiny-sd1"
    folder.mkdir(parents=True)
    (folder / "00007-999-older image.png").write_bytes(b"not ours")
    (folder / "notes.txt").write_text("a file without a number")
    recipe = _pattern_recipe(tmp_path, tiny_model_dir, 'pattern_dir = "[model_name]"\n'
                             'pattern = "[seed]-[prompt_spaces]-[batch_number]"\n')
    result = render(recipe, output_root=tmp_path / "outputs", cache_dir=tmp_path / "cache", threads=1)
    prompt = "a red circle, (blue sky_1.2), [day_night_0.5]"
    expected = [f"00008-42-{prompt}-1.png", f"00009-43-{prompt}-2.png"]
    assert [p.name for p in result.outputs] == expected
    assert sorted(p.name for p in folder.iterdir()) == ["00007-999-older image.png", *expected, "notes.txt"]
    # unchanged recipe, second run: the images are there under their numbers, nothing new is written
    again = render(recipe, output_root=tmp_path / "outputs", cache_dir=tmp_path / "cache", threads=1)
    assert [r.status for r in again.reports] == ["hit"] * 3
    assert [p.name for p in again.outputs] == expected and len(list(folder.iterdir())) == 4
    # another program writes 00015 while we were away: the next image takes 00016, as A1111 would
    (folder / "00015-from-a1111.png").write_bytes(b"other")
    edited = _pattern_recipe(tmp_path, tiny_model_dir, 'pattern_dir = "[model_name]"\n'
                             'pattern = "[seed]-[prompt_spaces]-[batch_number]"\n', batch_size=1)
    single = render(edited, output_root=tmp_path / "outputs", cache_dir=tmp_path / "cache", threads=1)
    assert [p.name for p in single.outputs] == [f"00016-42-{prompt}.png"]     # one image: no batch number


def test_time_in_a_pattern_changes_the_name_not_the_bytes_nor_the_cache_key(tmp_path, tiny_model_dir):
    pytest.importorskip("torch")
    from sdbake.runner.api import render
    recipe = _pattern_recipe(tmp_path, tiny_model_dir, 'pattern = "[datetime<%H%M%S%f>]-[seed]"\nnumber = false\n',
                             batch_size=1)
    first = render(recipe, output_root=tmp_path / "out", cache_dir=tmp_path / "cache", threads=1)
    second = render(recipe, output_root=tmp_path / "out", cache_dir=tmp_path / "cache", threads=1)
    assert [r.status for r in second.reports] == ["hit"] * 3
    (a,), (b,) = first.outputs, second.outputs
    assert a.name != b.name and a.name.endswith("-42.png") and not a.name.startswith("0000")
    assert a.read_bytes() == b.read_bytes()


def test_plan_numbers_after_the_folder_and_after_an_earlier_save_into_the_same_folder(tmp_path, tiny_model_dir):
    from sdbake.runner.api import make_plan
    from sdbake.runner.cli import main
    from sdbake.schemas.loader import load_recipe
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "00041-x.png").write_bytes(b"x")
    recipe = _pattern_recipe(tmp_path, tiny_model_dir, 'pattern = "[seed]-[prompt_words]"\n\n'
                             '[[stages]]\ntype = "save"\npattern = "[none]"\nformat = "webp"\n')
    assert main(["validate", str(recipe)]) == 0
    plan = make_plan(load_recipe(recipe), output_root=tmp_path / "outputs")
    words = "a red circle blue sky 1 2 day"         # 8 words
    assert [inv.outputs for inv in plan.invocations[2:]] == [
        [f"00042-42-{words}.png", f"00043-43-{words}.png"], ["00044.webp", "00045.webp"]]


def test_number_false_with_an_existing_name_and_on_exists_error_is_a_validate_error(tmp_path, tiny_model_dir,
                                                                                     capsys):
    from sdbake.runner.cli import main
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "42.png").write_bytes(b"someone else's")
    _pattern_recipe(tmp_path, tiny_model_dir, 'pattern = "[seed]"\nnumber = false\non_exists = "error"\n',
                    batch_size=1)
    assert main(["validate", str(tmp_path / "r.toml"), "--out", str(tmp_path / "outputs")]) == 1
    assert "42.png already exists and on_exists = \"error\"" in capsys.readouterr().err


def test_writer_takes_the_next_number_at_write_time_and_finds_its_own_bytes_under_any_number(tmp_path):
    from sdbake.stages.output.writer import write_new_file
    (tmp_path / "00010-someone else.png").write_bytes(b"theirs")
    first = write_new_file(tmp_path / "00003-42-cat.png", b"ours", root=tmp_path, sequence=True)
    assert (first.status, first.path.name) == ("written", "00011-42-cat.png")
    again = write_new_file(tmp_path / "00012-42-cat.png", b"ours", root=tmp_path, sequence=True)
    assert (again.status, again.path.name) == ("identical", "00011-42-cat.png")
    other = write_new_file(tmp_path / "00012-42-cat.png", b"new bytes", root=tmp_path, sequence=True)
    assert (other.status, other.path.name) == ("written", "00012-42-cat.png")
    assert (tmp_path / "00010-someone else.png").read_bytes() == b"theirs"


def test_a_batch_count_job_numbers_its_names_over_the_whole_job_as_a1111(tmp_path, tiny_model_dir):
    pytest.importorskip("torch")
    from sdbake.runner.cli import main
    recipe = _pattern_recipe(tmp_path, tiny_model_dir, 'pattern = "[generation_number]-[seed_first]-[seed_last]-'
                             '[seed]-[batch_number]"\nnumber = false\n')
    recipe.write_text(recipe.read_text().replace("batch_size = 2\n", "batch_size = 2\nn_iter = 3\n"))
    assert main(["run", str(recipe), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
                 "--quiet"]) == 0
    # seed 42: the job's seeds are 42..47, as the table above for seed 1234
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "1-42-47-42-1.png", "2-42-47-43-2.png", "3-42-47-44-1.png", "4-42-47-45-2.png", "5-42-47-46-1.png",
        "6-42-47-47-2.png"]
