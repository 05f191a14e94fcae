"""Train the demo model from nothing and save it as a diffusers folder (models/demo/).

    .venv/bin/python models/train.py            # the full run the committed weights come from

Stage 1 trains the VAE, stage 2 encodes procedural pictures once and trains UNet + text encoder
on those latents. Fixed seeds throughout; results still vary slightly with the CPU thread count.
"""

import argparse
import copy
import json
import shutil
import sys
import time
from pathlib import Path

import torch
from architecture import TOKENIZER_DIR, make_scheduler, make_tokenizer
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from plot import loss_plot
from train_unet import encode_dataset, train_unet
from train_vae import latent_scaling_factor, train_vae
from transformers import CLIPTextModel

HERE = Path(__file__).resolve().parent


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "demo")
    parser.add_argument("--work", type=Path, default=Path("/tmp/sdbake-demo-train"),
                        help="where the stage-1 VAE and logs are kept between runs")
    parser.add_argument("--vae-steps", type=int, default=400)
    parser.add_argument("--unet-steps", type=int, default=1100)
    parser.add_argument("--pictures", type=int, default=12000, help="64px pictures encoded for stage 2")
    parser.add_argument("--hires-pictures", type=int, default=1500, help="128px pictures for stage 2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--reuse-vae", action="store_true", help="load stage 1 from --work")
    parser.add_argument("--resume-vae", action="store_true", help="train the VAE in --work further")
    parser.add_argument("--vae-sampled", action="store_true",
                        help="decode posterior samples rather than means while training the VAE")
    parser.add_argument("--vae-only", action="store_true", help="stop after stage 1")
    parser.add_argument("--resume-from", type=Path,
                        help="stage 2 continues from this model folder's UNet and text encoder")
    return parser.parse_args(argv)


def cached_latents(work: Path, vae, count: int, seed: int, size: int):
    """Encoded pictures, kept in `work` so a re-run of stage 2 on the same VAE skips encoding."""
    path = work / f"latents_{size}px_{count}_{seed}.pt"
    if path.exists():
        return torch.load(path, weights_only=False)  # our own file: tensors and Scene records
    latents, scenes = encode_dataset(vae, count, seed=seed, size=size, scaling=vae.config.scaling_factor)
    torch.save((latents, scenes), path)
    return latents, scenes


def slim_tokenizer(folder: Path):
    """Ship vocab.json + merges.txt (1.4 MB, what SD1.5 ships and every transformers reads) in
    place of the 3.6 MB tokenizer.json that transformers 5 writes."""
    (folder / "tokenizer.json").unlink(missing_ok=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(TOKENIZER_DIR / name, folder / name)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # tiny weights late in training otherwise slow the CPU to a crawl
    args.work.mkdir(parents=True, exist_ok=True)

    def log(line):
        print(line, flush=True)
        with open(args.work / "train.log", "a") as log_file:
            log_file.write(line + "\n")

    started = time.time()
    vae_dir = args.work / "vae"
    history_file = args.work / "vae_history.json"
    if args.reuse_vae:
        vae = AutoencoderKL.from_pretrained(vae_dir).eval()
        vae_history = json.loads(history_file.read_text())
    else:
        for stale in args.work.glob("latents_*.pt"):  # encoded by an earlier VAE
            stale.unlink()
        start = AutoencoderKL.from_pretrained(vae_dir) if args.resume_vae else None
        earlier = json.loads(history_file.read_text()) if args.resume_vae else []
        vae, vae_history = train_vae(args.vae_steps, args.seed + 10 * len(earlier), log,
                                     sampled=args.vae_sampled, start=start)
        vae_history = earlier + [(len(earlier) + step, rec) for step, rec in vae_history]
        vae.register_to_config(scaling_factor=latent_scaling_factor(vae, seed=args.seed + 1))
        vae.save_pretrained(vae_dir)
        history_file.write_text(json.dumps(vae_history))
    if args.vae_only:
        return
    vae.requires_grad_(False)
    scaling = vae.config.scaling_factor
    log(f"vae done, scaling_factor {scaling:.4f} ({time.time() - started:.0f} s)")

    base = cached_latents(args.work, vae, args.pictures, seed=args.seed + 2, size=64)
    hires = cached_latents(args.work, vae, args.hires_pictures, seed=args.seed + 3, size=128)
    log(f"latents encoded ({time.time() - started:.0f} s)")

    start = None
    if args.resume_from:
        start = (UNet2DConditionModel.from_pretrained(args.resume_from / "unet", dtype=torch.float32),
                 CLIPTextModel.from_pretrained(args.resume_from / "text_encoder", dtype=torch.float32))

    def save(unet, text_encoder, folder):
        # fp16 halves the folder; the loader runs fp32 on CPU, and colours differ by < 1/255.
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=make_tokenizer(),
                                       unet=unet, scheduler=make_scheduler(), safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
        copy.deepcopy(pipe).to(torch.float16).save_pretrained(folder)
        slim_tokenizer(folder / "tokenizer")

    unet, text_encoder, unet_history = train_unet(
        [base, hires], args.unet_steps, args.seed + 4, log, start=start,
        checkpoint=lambda unet, text_encoder: save(unet, text_encoder, args.work / "checkpoint"))
    unet_history_file = args.work / "unet_history.json"
    if args.resume_from and unet_history_file.exists():  # continuing: draw both runs as one curve
        earlier = json.loads(unet_history_file.read_text())
        unet_history = earlier + [(len(earlier) + step, mse, hires) for step, mse, hires in unet_history]
    unet_history_file.write_text(json.dumps(unet_history))
    elapsed = time.time() - started
    log(f"training done in {elapsed:.0f} s")

    save(unet, text_encoder, args.out)
    loss_plot(vae_history, [], unet_history, HERE / "loss.png")
    summary = {"command": " ".join(["models/train.py", *(argv if argv is not None else sys.argv[1:])]),
               "wall_s": round(elapsed), "threads": args.threads,
               "final_vae_rec": sum(y for _, y in vae_history[-50:]) / 50,
               "final_unet_eps_mse": sum(y for _, y, h in unet_history[-200:] if not h)
               / max(1, sum(1 for *_, h in unet_history[-200:] if not h))}
    log(json.dumps(summary))
    (args.work / "summary.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
