"""Stage 3 of the demo model: sharpen the VAE decoder with the encoder frozen.

    .venv/bin/python models/finetune_decoder.py --vae /tmp/sdbake-demo-train/vae --steps 600 \\
        --out models/demo/vae --fp16

The encoder (and so every latent the UNet was trained on, and the scaling factor) stays as it is;
only the decoder learns more, which is why this can run beside or after stage 2.
"""

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from train_vae import training_pixels


def finetune_decoder(vae, steps: int, seed: int, log, batch_size: int = 32, full_every: int = 3):
    torch.manual_seed(seed)
    rng = random.Random(seed)
    vae.requires_grad_(False)
    trained = [vae.decoder, vae.post_quant_conv]
    for module in trained:
        module.requires_grad_(True).train()
    parameters = [p for module in trained for p in module.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=5e-4, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=5e-4, total_steps=steps, pct_start=0.05)
    history, started = [], time.time()
    for step, pixels in training_pixels(steps, seed, batch_size, full_every, rng):
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.mode()
        error = vae.decode(latents).sample - pixels
        loss = error.abs().mean() + error.pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        history.append((step, loss.item()))
        if step % 50 == 0 or step == steps - 1:
            log(f"decoder step {step}/{steps} rec {loss.item():.4f} ({time.time() - started:.0f} s)")
    return vae.eval(), history


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=4321)
    parser.add_argument("--fp16", action="store_true")
    parser.add_argument("--history", type=Path, help="write the loss history here (JSON)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    vae, history = finetune_decoder(AutoencoderKL.from_pretrained(args.vae), args.steps, args.seed,
                                    lambda line: print(line, flush=True))
    (vae.to(torch.float16) if args.fp16 else vae).save_pretrained(args.out)
    if args.history:
        args.history.write_text(json.dumps(history))
    print(" ".join(["finetune_decoder.py", *(argv if argv is not None else sys.argv[1:])]), "done")


if __name__ == "__main__":
    main()
