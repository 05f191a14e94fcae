"""Encode an image with its metadata (A1111 infotext + sdbake JSON), and read both back.

Where each piece goes:
- PNG: text chunk `parameters` holds the infotext (tEXt when latin-1 encodable, else iTXt, as
  A1111 does); an uncompressed iTXt chunk `sdbake` holds the sdbake JSON.
- JPEG and WebP: the infotext is the EXIF UserComment (tag 0x9286 in the Exif IFD), written as
  piexif's "unicode" encoding that A1111 uses: the 8-byte prefix `UNICODE\\0` then UTF-16 big
  endian. The sdbake JSON is the text of an `sdbake:recipe` property in an XMP packet
  (namespace SDBAKE_XMP_NAMESPACE), which survives tools that keep XMP.
Encoding is deterministic: the image's own `info` (timestamps, ICC, EXIF of a loaded file) is not
carried over, so the same pixels and metadata give the same bytes.
"""
from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Literal

from PIL import Image, PngImagePlugin
from sdbake.schemas.errors import InputFileError, OutputError
from sdbake.schemas.files import require_regular_file

ImageFormat = Literal["png", "webp", "jpeg"]
EXIF_IFD = 0x8769
USER_COMMENT_TAG = 0x9286
# EXIF 2.3 UserComment character-code prefixes; piexif writes UNICODE as UTF-16 big endian.
_UNICODE_PREFIX = b"UNICODE\x00"
_ASCII_PREFIX = b"ASCII\x00\x00\x00"
SDBAKE_XMP_NAMESPACE = "https://sdbake.invalid/ns/1.0/"
_XMP_META_NAMESPACE = "adobe:ns:meta/"
_RDF_NAMESPACE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
# A JPEG APP1 segment carries at most 65533 bytes (EXIF and XMP each get one).
_JPEG_SEGMENT_BYTES = 65533 - 64


def _plain_copy(image: Image.Image, fmt: ImageFormat) -> Image.Image:
    """The pixels only: a fresh image whose info carries nothing from where it came from."""
    if fmt == "jpeg" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")                  # as A1111: JPEG has no alpha
    elif image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    return Image.frombytes(image.mode, image.size, image.tobytes())


def _user_comment_exif(infotext: str) -> bytes:
    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD)[USER_COMMENT_TAG] = _UNICODE_PREFIX + infotext.encode("utf-16-be")
    return exif.tobytes()


def _xmp_packet(sdbake_json: str) -> bytes:
    ET.register_namespace("x", _XMP_META_NAMESPACE)
    ET.register_namespace("rdf", _RDF_NAMESPACE)
    ET.register_namespace("sdbake", SDBAKE_XMP_NAMESPACE)
    root = ET.Element(f"{{{_XMP_META_NAMESPACE}}}xmpmeta")
    rdf = ET.SubElement(root, f"{{{_RDF_NAMESPACE}}}RDF")
    description = ET.SubElement(rdf, f"{{{_RDF_NAMESPACE}}}Description", {f"{{{_RDF_NAMESPACE}}}about": ""})
    ET.SubElement(description, f"{{{SDBAKE_XMP_NAMESPACE}}}recipe").text = sdbake_json
    body = ET.tostring(root, encoding="unicode")
    return ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>' + body
            + '<?xpacket end="r"?>').encode("utf-8")


def _check_jpeg_segment(name: str, payload: bytes) -> None:
    if len(payload) > _JPEG_SEGMENT_BYTES:
        raise OutputError(f"the {name} is {len(payload)} bytes: a JPEG holds at most "
                          f"{_JPEG_SEGMENT_BYTES} (save as PNG or WebP instead)")


def encode_image(image: Image.Image, fmt: ImageFormat, infotext: str, sdbake_json: str | None,
                 quality: int = 95, webp_lossless: bool = False) -> bytes:
    """The file bytes of image in fmt, carrying infotext (and sdbake_json when given)."""
    plain = _plain_copy(image, fmt)
    buffer = io.BytesIO()
    if fmt == "png":
        chunks = PngImagePlugin.PngInfo()
        chunks.add_text("parameters", infotext)      # tEXt if latin-1, else iTXt (as A1111)
        if sdbake_json is not None:
            chunks.add_itxt("sdbake", sdbake_json)
        plain.save(buffer, "PNG", pnginfo=chunks)
        return buffer.getvalue()
    exif = _user_comment_exif(infotext)
    xmp = _xmp_packet(sdbake_json) if sdbake_json is not None else b""
    if fmt == "jpeg":
        _check_jpeg_segment("infotext EXIF", exif)
        _check_jpeg_segment("sdbake XMP", xmp)
        plain.save(buffer, "JPEG", quality=quality, exif=exif, xmp=xmp)
    elif fmt == "webp":
        plain.save(buffer, "WEBP", quality=quality, lossless=webp_lossless, exif=exif, xmp=xmp)
    else:
        raise ValueError(f"unknown image format {fmt!r}")
    return buffer.getvalue()


def decode_user_comment(raw: bytes) -> str:
    """Text of an EXIF UserComment: UNICODE (UTF-16 BE, as piexif), ASCII, or undefined code."""
    prefix, body = raw[:8], raw[8:]
    if prefix == _UNICODE_PREFIX:
        return body.decode("utf-16-be", errors="replace")
    if prefix == _ASCII_PREFIX:
        return body.decode("ascii", errors="replace")
    return body.decode("utf-8", errors="replace").rstrip("\x00")


def _sdbake_from_xmp(xmp: bytes | str) -> str | None:
    """The sdbake:recipe text of an XMP packet; None when it has none or does not parse."""
    try:
        root = ET.fromstring(xmp)            # the <?xpacket?> wrappers are processing instructions
    except ET.ParseError:
        return None
    found = root.find(f".//{{{SDBAKE_XMP_NAMESPACE}}}recipe")
    return found.text if found is not None else None


def _text_or_none(value) -> str | None:
    return str(value) if isinstance(value, str) else None


def read_metadata(path: Path) -> tuple[str | None, str | None]:
    """(infotext, sdbake JSON) of a PNG, JPEG or WebP file; None for what it does not hold."""
    require_regular_file(path, "image")
    try:
        with Image.open(path) as image:
            image_format = image.format
            if image_format == "PNG":
                text = image.text                      # reads text chunks after IDAT too
                return _text_or_none(text.get("parameters")), _text_or_none(text.get("sdbake"))
            exif_ifd = image.getexif().get_ifd(EXIF_IFD)
            raw_comment = exif_ifd.get(USER_COMMENT_TAG)
            xmp = image.info.get("xmp")
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such image file") from None
    except Exception as exc:  # noqa: BLE001 (see below)
        # A downloaded file may be anything: PIL answers a damaged or hostile one with OSError,
        # SyntaxError, ValueError (text chunks over its memory limit), DecompressionBombError, or
        # whatever its parsers hit; every one means "not an image we can read".
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise InputFileError(f"{path}: not a readable image ({reason})") from None
    infotext = decode_user_comment(raw_comment) if isinstance(raw_comment, bytes) else raw_comment
    sdbake_json = _sdbake_from_xmp(xmp) if isinstance(xmp, (bytes, str)) and xmp else None
    # A hostile file can give any EXIF type (a number, a tuple): only text is metadata.
    return (infotext if isinstance(infotext, str) else None), sdbake_json
