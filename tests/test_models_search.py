"""Resolving a recipe's model name: a path, or a file name found in the configured search folders."""
from __future__ import annotations

import pytest
from sdbake.runner.models.search import load_search_config, resolve_model_file
from sdbake.schemas.errors import ModelError


@pytest.fixture
def home(tmp_path, monkeypatch, isolated_env):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return isolated_env.home


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_config_files_in_order_and_relative_folders(tmp_path, home, monkeypatch, isolated_env):
    (tmp_path / "work" / "sdbake.toml").write_text('[folders]\ncheckpoints = ["models/sd"]\n')
    user = isolated_env.config / "sdbake" / "config.toml"          # $XDG_CONFIG_HOME/sdbake/config.toml
    user.parent.mkdir(parents=True)
    user.write_text('[folders]\ncheckpoints = ["/webui/models/Stable-diffusion"]\nloras = ["~/loras"]\n')
    extra = tmp_path / "extra.toml"
    extra.write_text('[folders]\nvae = ["vaes"]\n')
    monkeypatch.setenv("SDBAKE_CONFIG", str(extra))
    config = load_search_config()
    assert config.folders["checkpoints"] == [tmp_path / "work" / "models" / "sd",
                                             __import__("pathlib").Path("/webui/models/Stable-diffusion")]
    assert config.folders["loras"] == [home / "loras"]
    assert config.folders["vae"] == [tmp_path / "vaes"]
    assert len(config.sources) == 3


def test_unknown_folder_kind_is_an_error(tmp_path, home):
    (tmp_path / "work" / "sdbake.toml").write_text('[folders]\ncheckpoint = ["x"]\n')
    with pytest.raises(ModelError, match="unknown \\[folders\\] key 'checkpoint'"):
        load_search_config()


def test_path_relative_to_recipe_folder_wins(tmp_path, home):
    recipe_dir = tmp_path / "recipes"
    model = _touch(recipe_dir / "weights" / "m.safetensors")
    assert resolve_model_file("weights/m.safetensors", "checkpoints", recipe_dir) == model
    assert resolve_model_file(str(model), "checkpoints", tmp_path) == model


def test_name_with_or_without_extension_found_in_folders(tmp_path, home):
    webui = tmp_path / "webui"
    model = _touch(webui / "SD15" / "v1-5-pruned-emaonly.safetensors")
    diffusers_dir = webui / "tiny-folder"
    _touch(diffusers_dir / "model_index.json")
    _touch(diffusers_dir / "unet" / "diffusion_pytorch_model.safetensors")
    (tmp_path / "work" / "sdbake.toml").write_text(f'[folders]\ncheckpoints = ["{webui}"]\n')
    for name in ("v1-5-pruned-emaonly", "v1-5-pruned-emaonly.safetensors", "SD15/v1-5-pruned-emaonly"):
        assert resolve_model_file(name, "checkpoints", tmp_path / "recipes") == model
    assert resolve_model_file("tiny-folder", "checkpoints", tmp_path / "recipes") == diffusers_dir


def test_ambiguous_name_lists_candidates(tmp_path, home):
    a = _touch(tmp_path / "a" / "same.safetensors")
    b = _touch(tmp_path / "b" / "same.ckpt")
    (tmp_path / "work" / "sdbake.toml").write_text(f'[folders]\ncheckpoints = ["{a.parent}", "{b.parent}"]\n')
    with pytest.raises(ModelError) as excinfo:
        resolve_model_file("same", "checkpoints", tmp_path)
    message = str(excinfo.value)
    assert "ambiguous" in message and str(a) in message and str(b) in message and "\n" not in message
    assert resolve_model_file("same.ckpt", "checkpoints", tmp_path) == b     # the extension settles it


def test_missing_name_lists_folders_searched(tmp_path, home):
    folder = tmp_path / "loras"
    folder.mkdir()
    (tmp_path / "work" / "sdbake.toml").write_text(f'[folders]\nloras = ["{folder}"]\n')
    with pytest.raises(ModelError) as excinfo:
        resolve_model_file("nosuchlora", "loras", tmp_path / "recipes")
    message = str(excinfo.value)
    assert "nosuchlora" in message and str(folder) in message and str(tmp_path / "recipes") in message


def test_missing_name_without_config_says_how_to_add_folders(tmp_path, home):
    with pytest.raises(ModelError, match=r"nosuchmodel.*\[folders\] checkpoints"):
        resolve_model_file("nosuchmodel", "checkpoints", tmp_path)
