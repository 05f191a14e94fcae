"""What the save stage builds on: path templates, safe names, no-overwrite writes, A1111 infotext
and image metadata. Nothing here imports torch, so `sdbake show` and the other torch-free commands
use it freely; the VAE decode is stages/vae.py.

Import the submodules themselves: this package imports none of them, so that `validate` can render a
template (templates, names) without loading PIL (metadata)."""
