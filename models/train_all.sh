#!/usr/bin/env bash
# Rebuild models/demo/ from nothing, in the order the committed weights were made (see README.md).
# About 75 minutes of wall time on one (shared) CPU core; WORK keeps the stage-1 VAE, encoded latents and loss histories.
set -euo pipefail
cd "$(dirname "$0")"
PY=../.venv/bin/python
WORK=${WORK:-/tmp/sdbake-demo-train}
rm -rf "$WORK"

# Stage 1: VAE. 500 steps decoding posterior samples, then 400 decoding posterior means.
$PY train.py --work "$WORK" --vae-only --vae-steps 500 --vae-sampled
$PY train.py --work "$WORK" --vae-only --vae-steps 400 --resume-vae
# Stage 2: UNet + text encoder on latents of that VAE; each run writes demo/ (fp16). 2a learns to
# denoise; 2b and 2c continue from the run before (fresh one-cycle learning rate each time).
$PY train.py --work "$WORK" --reuse-vae --unet-steps 750
cp -r demo "$WORK/stage2a"
$PY train.py --work "$WORK" --reuse-vae --unet-steps 600 --resume-from "$WORK/stage2a"
cp -r demo "$WORK/stage2b"
$PY train.py --work "$WORK" --reuse-vae --unet-steps 1000 --resume-from "$WORK/stage2b"
cp -r demo "$WORK/stage2c"
$PY train.py --work "$WORK" --reuse-vae --unet-steps 3500 --resume-from "$WORK/stage2c" --seed 11 --threads 2 \
    --out "$WORK/stage2d"
cp -r "$WORK/stage2d/unet" "$WORK/stage2d/text_encoder" demo/      # stage 2d goes into demo/
# Stage 3: sharpen the decoder, encoder frozen (latents and scaling factor unchanged).
$PY finetune_decoder.py --vae "$WORK/vae" --steps 600 --out "$WORK/vae_tuned" \
    --history "$WORK/decoder_history1.json"
$PY finetune_decoder.py --vae "$WORK/vae_tuned" --steps 500 --seed 4322 --out demo/vae --fp16 \
    --history "$WORK/decoder_history2.json"
$PY plot.py "$WORK" loss.png
$PY sample_grid.py demo samples.png
du -sh demo
