"""Model handling: offline loading, file hashes, search folders, the in-process registry, LoRA.

`hashing` and `search` import no torch; import `loading`, `registry` and `lora` only where torch is
needed (`from sdbake.runner.models.loading import load_model`).
"""
import os

# huggingface_hub reads these once, at its import: set before any submodule pulls in diffusers,
# transformers or accelerate, so no code path here can reach the network (docs/design.md section 8).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DISABLE_TELEMETRY", "1")
