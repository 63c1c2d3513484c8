"""Forged image files for the bad-input corpus: damaged, lying about their size, decompression bombs, exotic
modes, animations, and files of other kinds that are no image at all.

Everything is built here in code (Pillow, numpy, zlib, hand-written headers): no binary fixtures.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np
from PIL import Image

from harness.images import encode


def photo(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    """Smooth colour waves plus a little noise: compresses like a photo."""
    y, x = np.mgrid[0:height, 0:width]
    waves = np.stack([128 + 100 * np.sin(x / 9.0 + c) * np.cos(y / 7.0 - c) for c in (0, 1, 2)], -1)
    noise = np.random.default_rng(seed).normal(0, 4, waves.shape)
    return Image.fromarray(np.clip(waves + noise, 0, 255).astype(np.uint8))


def good_png() -> bytes:
    return encode(photo(), "PNG")


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_from_rows(width: int, height: int, depth: int, colour: int, row: bytes) -> bytes:
    """A PNG whose rows all equal ``row`` (filter byte included), compressed row by row, never whole."""
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


def blank_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG."""
    return png_from_rows(width, height, 1, 0, bytes(1 + (width + 7) // 8))


def png_header_only(width: int, height: int) -> bytes:
    """An RGB PNG header claiming ``width`` x ``height`` followed by a few bytes of pixel data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(bytes(100)))
        + png_chunk(b"IEND", b"")
    )


def rgb48_png() -> bytes:
    """16 bits per channel RGB (Pillow cannot write it): a left half of 0x4000 and a right half of 0xC000."""
    width, height = 32, 24
    row = np.empty((width, 3), ">u2")
    row[: width // 2], row[width // 2 :] = 0x4000, 0xC000
    return png_from_rows(width, height, 16, 2, b"\x00" + row.tobytes())


def png_with_ztxt_bomb() -> bytes:
    """A valid PNG with a zTXt chunk that inflates to 64 MB (Pillow's limit is 1 MB)."""
    data = good_png()
    at = data.find(b"IDAT") - 4
    bomb = png_chunk(b"zTXt", b"comment\x00\x00" + zlib.compress(bytes(64 << 20), 9))
    return data[:at] + bomb + data[at:]


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose SOF0 header is patched to claim ``width`` x ``height``."""
    data = bytearray(encode(Image.new("RGB", (16, 16), (90, 120, 200)), "JPEG"))
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_claiming(width: int, height: int) -> bytes:
    """A 4x4 GIF whose screen and image descriptor are patched to claim ``width`` x ``height``."""
    data = bytearray(encode(Image.new("P", (4, 4)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    descriptor = data.find(b"\x2c", 13)
    data[descriptor + 5 : descriptor + 9] = struct.pack("<HH", width, height)
    return bytes(data)


def webp_claiming(width: int, height: int) -> bytes:
    """A WebP with an extended (VP8X) header claiming a ``width`` x ``height`` canvas."""
    vp8x = bytes(4) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    small = encode(Image.new("RGB", (4, 4)), "WEBP")
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x + small[12:]
    return b"RIFF" + struct.pack("<I", len(body)) + body


def bmp_claiming(width: int, height: int) -> bytes:
    """A BMP header claiming ``width`` x ``height`` 8-bit pixels, with no pixel data."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


def truncated(data: bytes, fraction: float) -> bytes:
    return data[: int(len(data) * fraction)]


def zeroed_middle(data: bytes, count: int = 64) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(count) + data[middle + count :]


def scrambled_after(data: bytes, keep: int) -> bytes:
    """Keep the first ``keep`` bytes (the signature), invert every 7th byte after them."""
    out = bytearray(data)
    for i in range(keep, len(out), 7):
        out[i] ^= 0xFF
    return bytes(out)


def frames(*colours: tuple[int, int, int]) -> list[Image.Image]:
    return [Image.new("RGB", (48, 40), colour) for colour in colours]


def animated(fmt: str, **options: Any) -> bytes:
    first, *rest = frames((220, 30, 30), (30, 30, 220), (30, 200, 30))
    return encode(first, fmt, save_all=True, append_images=rest, duration=100, loop=0, **options)


def exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def sixteen_bit_grey() -> Image.Image:
    pixels = np.full((40, 48), 30_000, np.uint16)
    pixels[:, 24:] = 65_535
    return Image.fromarray(pixels)


PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n%%EOF\n"
SVG = (
    b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
    b'<rect width="64" height="64" fill="red"/></svg>\n'
)
ELF = b"\x7fELF\x02\x01\x01" + bytes(57)
ZIP = b"PK\x03\x04" + bytes(26) + b"PK\x05\x06" + bytes(18)
HTML = b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>"
