"""With sockets disabled, every supported format still loads: nothing in loading touches the network."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def test_network_guard_really_blocks(network_guard):
    import socket
    with pytest.raises(RuntimeError, match="NETWORK ATTEMPT"):
        socket.getaddrinfo("huggingface.co", 443)
    assert network_guard


def test_every_format_loads_offline(network_guard, monkeypatch, tmp_path, tiny_model_dir, tiny_single_file,
                                    tiny_lora):
    import tiny_models
    from sdbake.runner.models.loading import load_model
    from sdbake.runner.models.lora import apply_loras, remove_loras
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)        # the loader must not rely on the caller
    vae_file = tiny_models.save_tiny_vae_file(tmp_path / "vae.safetensors")
    folder = load_model(tiny_model_dir, vae=vae_file)
    single = load_model(tiny_single_file, config=tiny_model_dir)
    apply_loras(single, [(tiny_lora, 0.5)])
    remove_loras(single)
    pickled = tmp_path / "tiny.ckpt"
    from safetensors.torch import load_file
    torch.save(load_file(str(tiny_single_file)), pickled)
    load_model(pickled, allow_pickle=True, config=tiny_model_dir)
    assert folder.family == single.family == "sd1"
    assert network_guard == []
