"""What the save stage builds on: path templates, safe names, no-overwrite writes, A1111 infotext
and image metadata. Nothing here imports torch, so `sdbake show` and the other torch-free commands
use it freely; the VAE decode is stages/vae.py."""
from sdbake.stages.output.infotext import format_infotext, parse_infotext
from sdbake.stages.output.metadata import encode_image, read_metadata
from sdbake.stages.output.names import safe_relative_path
from sdbake.stages.output.templates import TEMPLATE_VARIABLES, render_path
from sdbake.stages.output.writer import WriteResult, write_new_file

__all__ = [
    "TEMPLATE_VARIABLES", "WriteResult", "encode_image", "format_infotext",
    "parse_infotext", "read_metadata", "render_path", "safe_relative_path", "write_new_file",
]
