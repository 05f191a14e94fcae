"""What the save stage builds on: path templates, safe names, no-overwrite writes, A1111 infotext,
image metadata and the VAE decode with its NaN guard.

decode.py imports torch; import it directly (`from sdbake.stages.output.decode import decode_latents`) so
that `sdbake show` and the other torch-free commands can use the rest without loading torch.
"""
from sdbake.stages.output.infotext import a1111_sampler_label, format_infotext, parse_infotext
from sdbake.stages.output.metadata import encode_image, read_metadata
from sdbake.stages.output.names import safe_relative_path
from sdbake.stages.output.templates import TEMPLATE_VARIABLES, render_path
from sdbake.stages.output.writer import WriteResult, write_new_file

__all__ = [
    "TEMPLATE_VARIABLES", "WriteResult", "a1111_sampler_label", "encode_image", "format_infotext",
    "parse_infotext", "read_metadata", "render_path", "safe_relative_path", "write_new_file",
]
