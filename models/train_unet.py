"""Stage 2 of the demo model: train UNet + text encoder together on precomputed latents."""

import copy
import random
import time

import numpy as np
import torch
from architecture import SCHEDULER_CONFIG, make_text_encoder, make_tokenizer, make_unet
from dataset import caption, make_dataset
from train_vae import to_tensor

UNCOND_RATE = 0.1  # captions dropped to "" so classifier-free guidance has an unconditional model
MIN_SNR_GAMMA = 5.0  # Hang et al. 2023: weight eps-loss by min(SNR, gamma) / SNR, converges faster
EMA_DECAY = 0.998
BASE_LR = 5e-4
TEXT_LR_SCALE = 4.0


def alphas_cumprod() -> torch.Tensor:
    """SD1.x's scaled_linear schedule: betas linear in sqrt space."""
    c = SCHEDULER_CONFIG
    betas = torch.linspace(c["beta_start"] ** 0.5, c["beta_end"] ** 0.5, c["num_train_timesteps"],
                           dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).float()


@torch.no_grad()
def encode_dataset(vae, count: int, seed: int, size: int, scaling: float):
    """Latents (scaled, the mean of each posterior) and scenes of `count` procedural pictures."""
    pictures, scenes = make_dataset(count, seed=seed, size=size)
    chunks = np.array_split(pictures, max(1, count // 64))
    latents = torch.cat([vae.encode(to_tensor(chunk)).latent_dist.mean for chunk in chunks]) * scaling
    return latents, scenes


def token_ids(tokenizer, captions: list[str]) -> torch.Tensor:
    # Always padded to 77 as every SD1.x pipeline does, so training sees what inference sees.
    return tokenizer(captions, padding="max_length", max_length=77, truncation=True,
                     return_tensors="pt").input_ids


def ema_update(average, model, decay: float):
    with torch.no_grad():
        for a, p in zip(average.parameters(), model.parameters()):
            a.lerp_(p, 1.0 - decay)


def train_unet(datasets, steps: int, seed: int, log, checkpoint=None, checkpoint_every: int = 200,
               start=None, batch_sizes=(64, 16), hires_every: int = 8):
    """`datasets` = [(latents, scenes) at base size, (latents, scenes) at 2x]. Every
    `hires_every`-th step trains on a smaller batch of 2x latents so the model also denoises there
    (the hires pass). `checkpoint(unet, text_encoder)` receives the EMA copies now and then, to
    look at samples while training goes on. `start` = (unet, text_encoder) continues from those.
    Returns the EMA copies and the loss history."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    tokenizer = make_tokenizer()
    unet, text_encoder = (make_unet(), make_text_encoder()) if start is None else start
    unet, text_encoder = unet.train(), text_encoder.train()
    unet_ema, text_ema = copy.deepcopy(unet).eval(), copy.deepcopy(text_encoder).eval()
    # The caption's path (text encoder and the UNet's cross-attention) learns at a higher rate:
    # at one rate the UNet learns to denoise long before it starts listening to the prompt.
    listening = list(text_encoder.parameters()) + [p for name, p in unet.named_parameters() if ".attn2." in name]
    listening_ids = {id(p) for p in listening}
    rest = [p for p in unet.parameters() if id(p) not in listening_ids]
    parameters = rest + listening
    rates = [BASE_LR, BASE_LR * TEXT_LR_SCALE]
    optimizer = torch.optim.AdamW([{"params": rest, "lr": rates[0]}, {"params": listening, "lr": rates[1]}],
                                  weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=rates, total_steps=steps, pct_start=0.04)
    abar = alphas_cumprod()
    snr = abar / (1 - abar)
    loss_weight = torch.clamp(snr, max=MIN_SNR_GAMMA) / snr
    history, started = [], time.time()
    for step in range(steps):
        hires = step % hires_every == hires_every - 1
        latents, scenes = datasets[1] if hires else datasets[0]
        batch = batch_sizes[1] if hires else batch_sizes[0]
        index = torch.randint(0, len(latents), (batch,))
        clean = latents[index]
        captions = ["" if rng.random() < UNCOND_RATE else caption(scenes[i], rng) for i in index.tolist()]
        t = torch.randint(0, len(abar), (batch,))
        noise = torch.randn_like(clean)
        a = abar[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * clean + (1 - a).sqrt() * noise
        context = text_encoder(token_ids(tokenizer, captions)).last_hidden_state
        predicted = unet(noisy, t, context).sample
        per_sample = (predicted - noise).pow(2).mean(dim=(1, 2, 3))
        loss = (per_sample * loss_weight[t]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        decay = min(EMA_DECAY, (1 + step) / (10 + step))
        ema_update(unet_ema, unet, decay)
        ema_update(text_ema, text_encoder, decay)
        history.append((step, per_sample.mean().item(), hires))
        if checkpoint is not None and step % checkpoint_every == checkpoint_every - 1:
            checkpoint(unet_ema, text_ema)
        if step % 25 == 0 or step == steps - 1:
            log(f"unet step {step}/{steps} eps-mse {per_sample.mean().item():.4f}"
                f"{' (2x)' if hires else ''} ({time.time() - started:.0f} s)")
    return unet_ema, text_ema, history
