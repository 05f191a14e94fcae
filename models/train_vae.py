"""Stage 1 of the demo model: train its VAE on procedural pictures (reconstruction + a small KL)."""

import random
import time

import numpy as np
import torch
from architecture import make_vae
from dataset import make_dataset

KL_WEIGHT = 1e-6  # as SD's first-stage models: enough to keep the latent tame, no more
CROP = 32  # most steps see 32x32 crops: the VAE is convolutional and crops are 4x cheaper


def to_tensor(pictures: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1], the range SD's VAE works in."""
    return torch.from_numpy(pictures).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def random_crops(batch: torch.Tensor, size: int, rng: random.Random) -> torch.Tensor:
    crops = []
    for picture in batch:
        top, left = rng.randrange(picture.shape[1] - size + 1), rng.randrange(picture.shape[2] - size + 1)
        crops.append(picture[:, top:top + size, left:left + size])
    return torch.stack(crops)


def training_pixels(steps: int, seed: int, batch_size: int, full_every: int, rng: random.Random):
    """Yield (step, pixels): a fresh synthetic batch per step, cropped to CROP except every full_every-th."""
    for step in range(steps):
        pictures, _ = make_dataset(batch_size, seed=seed * 1_000_003 + step)
        pixels = to_tensor(pictures)
        yield step, pixels if step % full_every == 0 else random_crops(pixels, CROP, rng)


def vae_loss(vae, pixels: torch.Tensor, sampled: bool) -> tuple[torch.Tensor, float]:
    posterior = vae.encode(pixels).latent_dist
    # Decoding posterior samples teaches the decoder to average over the latent noise (blurred
    # edges, muddied colours) until the tiny KL has shrunk that noise; decoding the mean does not.
    reconstruction = vae.decode(posterior.sample() if sampled else posterior.mode()).sample
    error = reconstruction - pixels
    # L1 keeps flat colours exact, MSE punishes the odd wrong pixel at edges.
    rec = error.abs().mean() + error.pow(2).mean()
    kl = posterior.kl().mean() / pixels[0].numel()
    return rec + KL_WEIGHT * kl, rec.item()


def train_vae(steps: int, seed: int, log, sampled: bool = False, start=None, batch_size: int = 32,
              full_every: int = 6):
    """Trains a new VAE, or further trains `start`; returns it and its loss history [(step, loss)]."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    vae = make_vae() if start is None else start.train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=steps, pct_start=0.05)
    history, started = [], time.time()
    for step, pixels in training_pixels(steps, seed, batch_size, full_every, rng):
        loss, rec = vae_loss(vae, pixels, sampled)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        history.append((step, rec))
        if step % 50 == 0 or step == steps - 1:
            log(f"vae step {step}/{steps} rec {rec:.4f} ({time.time() - started:.0f} s)")
    return vae.eval(), history


@torch.no_grad()
def latent_scaling_factor(vae, seed: int, count: int = 512) -> float:
    """1 / std of the latents, so scaled latents have unit variance (SD1.x's 0.18215 is the same idea)."""
    pictures, _ = make_dataset(count, seed=seed)
    latents = torch.cat([vae.encode(to_tensor(chunk)).latent_dist.mean for chunk in np.array_split(pictures, 8)])
    return float(1.0 / latents.std())
