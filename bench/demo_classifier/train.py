"""Train the shape classifier used by bench/eval_demo_model.py (a few minutes on one shared core).

    .venv/bin/python bench/demo_classifier/train.py
"""

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "models"))
sys.path.insert(0, str(HERE))

from classifier import SHAPES, WEIGHTS, make_classifier, to_input
from dataset import make_dataset


def degrade(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Blur, noise and colour shifts, so pictures from the diffusion model still classify."""
    n = batch.shape[0]
    blurred = F.avg_pool2d(F.pad(batch, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    blur = (torch.rand(n, 1, 1, 1, generator=generator) < 0.5).float()
    batch = blur * blurred + (1 - blur) * batch
    batch = batch + torch.randn(n, 3, 1, 1, generator=generator) * 0.08
    batch = batch + torch.randn(batch.shape, generator=generator) * torch.rand(n, 1, 1, 1, generator=generator) * 0.15
    return batch.clamp(-1, 1)


def main(steps: int = 600, batch_size: int = 64, seed: int = 99):
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = make_classifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    started = time.time()
    for step in range(steps):
        pictures, scenes = make_dataset(batch_size, seed=seed * 7919 + step)
        labels = torch.tensor([SHAPES.index(scene.shape) for scene in scenes])
        loss = F.cross_entropy(model(degrade(to_input(pictures), generator)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 100 == 0:
            print(f"step {step} loss {loss.item():.4f} ({time.time() - started:.0f} s)", flush=True)
    model.eval()
    pictures, scenes = make_dataset(1000, seed=seed + 1)
    with torch.no_grad():
        predicted = model(to_input(pictures)).argmax(dim=1)
    labels = torch.tensor([SHAPES.index(scene.shape) for scene in scenes])
    print(f"held-out accuracy on clean pictures: {(predicted == labels).float().mean().item():.3f}")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, WEIGHTS)


if __name__ == "__main__":
    main()
