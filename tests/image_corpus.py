"""A corpus of odd, fuzzed and broken image files, generated here (nothing downloaded).

Every builder returns ``(name, bytes)`` pairs; :func:`corpus` gathers them all. Names say what a file is
(``valid/png-RGBA``, ``dds/fourcc-ATC``, ``fuzz/jpeg-RGB/mut-3``) so a failing case reads on its own. The
hand-written headers (DDS, PSD, TGA, PCX, BMP, ICO, PNG chunks) follow the published layouts of each format.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib

import numpy as np
from PIL import Image

W, H = 24, 16  # small: the whole corpus decodes in well under a second


def _noise(mode: str = "RGB", size: tuple[int, int] = (W, H), seed: int = 0) -> Image.Image:
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(arr).convert(mode)


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


# --- valid files of many formats and modes -------------------------------------------------------------------

_VALID = [  # (name, mode, format, save options)
    ("jpeg-RGB", "RGB", "JPEG", {}), ("jpeg-L", "L", "JPEG", {}), ("jpeg-CMYK", "CMYK", "JPEG", {}),
    ("jpeg-progressive", "RGB", "JPEG", {"progressive": True}), ("jpeg-420", "RGB", "JPEG", {"subsampling": 2}),
    ("png-RGB", "RGB", "PNG", {}), ("png-RGBA", "RGBA", "PNG", {}), ("png-P", "P", "PNG", {}),
    ("png-LA", "LA", "PNG", {}), ("png-L", "L", "PNG", {}), ("png-1", "1", "PNG", {}), ("png-I;16", "I;16", "PNG", {}),
    ("png-interlaced", "RGB", "PNG", {"interlace": 1}),
    ("gif-P", "P", "GIF", {}), ("gif-L", "L", "GIF", {}),
    ("tiff-RGB", "RGB", "TIFF", {}), ("tiff-CMYK", "CMYK", "TIFF", {}), ("tiff-I;16", "I;16", "TIFF", {}),
    ("tiff-F", "F", "TIFF", {}), ("tiff-I", "I", "TIFF", {}), ("tiff-lzw", "RGB", "TIFF", {"compression": "tiff_lzw"}),
    ("tiff-deflate", "RGBA", "TIFF", {"compression": "tiff_adobe_deflate"}), ("tiff-LAB", "LAB", "TIFF", {}),
    ("tiff-YCbCr-jpeg", "RGB", "TIFF", {"compression": "jpeg"}), ("tiff-1-g4", "1", "TIFF", {"compression": "group4"}),
    ("webp-RGB", "RGB", "WEBP", {}), ("webp-RGBA", "RGBA", "WEBP", {}),
    ("webp-lossless", "RGB", "WEBP", {"lossless": True}),
    ("bmp-RGB", "RGB", "BMP", {}), ("bmp-P", "P", "BMP", {}), ("bmp-1", "1", "BMP", {}), ("bmp-L", "L", "BMP", {}),
    ("ico-RGBA", "RGBA", "ICO", {}), ("pcx-RGB", "RGB", "PCX", {}), ("pcx-P", "P", "PCX", {}),
    ("pcx-1", "1", "PCX", {}),
    ("tga-RGB", "RGB", "TGA", {}), ("tga-RGBA-rle", "RGBA", "TGA", {"compression": "tga_rle"}),
    ("tga-L", "L", "TGA", {}), ("tga-P", "P", "TGA", {}),
    ("ppm-RGB", "RGB", "PPM", {}), ("pgm-L", "L", "PPM", {}), ("pbm-1", "1", "PPM", {}), ("pfm-F", "F", "PPM", {}),
    ("sgi-RGB", "RGB", "SGI", {}), ("qoi-RGBA", "RGBA", "QOI", {}), ("jp2-RGB", "RGB", "JPEG2000", {}),
    ("im-RGB", "RGB", "IM", {}), ("msp-1", "1", "MSP", {}), ("spider-F", "F", "SPIDER", {}), ("xbm-1", "1", "XBM", {}),
    ("dds-RGBA", "RGBA", "DDS", {}), ("dds-RGB", "RGB", "DDS", {}), ("blp-P", "P", "BLP", {}),
    ("avif-RGB", "RGB", "AVIF", {"quality": 50, "speed": 10}),
]


@functools.cache  # fuzzed() mutates these too: build them once
def valid_files() -> list[tuple[str, bytes]]:
    """Small, well-formed files in every format Pillow writes here, in many modes."""
    out = []
    for name, mode, fmt, kw in _VALID:
        out.append((f"valid/{name}", _save(_noise(mode), fmt, **kw)))
    trans = _noise("P")
    trans.info["transparency"] = 0
    out.append(("valid/png-P-transparency", _save(trans, "PNG", transparency=0)))
    frames = [_noise("P", seed=s) for s in range(3)]
    out.append(("valid/gif-animated", _save(frames[0], "GIF", save_all=True, append_images=frames[1:])))
    out.append(("valid/png-RGB16", _png(W, H, 16, 2, np.random.default_rng(1).bytes(W * H * 6))))
    png128 = _save(_noise("RGBA", (128, 128)), "PNG")  # Pillow writes every icon size (slow): one by hand
    out.append(("valid/icns-png", b"icns" + struct.pack(">I", 16 + len(png128)) + b"ic07"
                + struct.pack(">I", 8 + len(png128)) + png128))
    out.append(("valid/png-LA16", _png(W, H, 16, 4, np.random.default_rng(2).bytes(W * H * 4))))
    return out


# --- hand-written headers -------------------------------------------------------------------------------------

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width: int, height: int, depth: int, colour: int, pixels: bytes, raw_rows: bool = False) -> bytes:
    """A PNG with the given IHDR and one IDAT of ``pixels`` (rows get filter byte 0 unless ``raw_rows``)."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    row = max(1, width * channels * depth // 8)
    if not raw_rows:
        pixels = b"".join(b"\0" + pixels[i * row:(i + 1) * row].ljust(row, b"\0") for i in range(min(height, 64)))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(pixels)) + _chunk(b"IEND", b"")


def _dds(pf_flags: int, fourcc: bytes = b"\0\0\0\0", bitcount: int = 0, masks=(0, 0, 0, 0),
         width: int = 8, height: int = 8, dxgi: int | None = None, header_size: int = 124, body: int = 256) -> bytes:
    """A DirectDraw Surface: magic, 124-byte header with its 32-byte pixel format, optional DX10 header."""
    caps_flags = 0x1 | 0x2 | 0x4 | 0x1000  # CAPS | HEIGHT | WIDTH | PIXELFORMAT
    head = struct.pack("<7I", header_size, caps_flags, height, width, 0, 0, 0) + b"\0" * 44
    pixel_format = struct.pack("<2I", 32, pf_flags) + fourcc.ljust(4, b"\0") + struct.pack("<5I", bitcount, *masks)
    caps = struct.pack("<5I", 0x1000, 0, 0, 0, 0)
    dx10 = struct.pack("<5I", dxgi, 3, 0, 1, 0) if dxgi is not None else b""
    return b"DDS " + head + pixel_format + caps + dx10 + bytes(body)


DDPF_ALPHAPIXELS, DDPF_FOURCC, DDPF_RGB, DDPF_LUMINANCE, DDPF_PAL8 = 0x1, 0x4, 0x40, 0x20000, 0x20


def dds_files() -> list[tuple[str, bytes]]:
    """DDS files with pixel formats Pillow does not implement (``NotImplementedError``) and odd headers."""
    unsupported = [
        ("fourcc-ATC", _dds(DDPF_FOURCC, b"ATC ")),
        ("fourcc-ETC1", _dds(DDPF_FOURCC, b"ETC1")),
        ("fourcc-UYVY", _dds(DDPF_FOURCC, b"UYVY")),
        ("fourcc-d3dfmt-float", _dds(DDPF_FOURCC, struct.pack("<I", 116))),  # D3DFMT_A32B32G32R32F
        ("dx10-R16G16B16A16_FLOAT", _dds(DDPF_FOURCC, b"DX10", dxgi=10)),
        ("dx10-R32_FLOAT", _dds(DDPF_FOURCC, b"DX10", dxgi=41)),
        ("dx10-B5G6R5", _dds(DDPF_FOURCC, b"DX10", dxgi=85)),
        ("no-pixel-format-flags", _dds(0)),
        ("alpha-only-flag", _dds(0x2)),  # DDPF_ALPHA: alpha-only surfaces
    ]
    odd = [
        ("luminance-32bit", _dds(DDPF_LUMINANCE, bitcount=32)),
        ("bad-header-size", _dds(DDPF_RGB, bitcount=24, header_size=100)),
        ("header-cut", _dds(DDPF_RGB, bitcount=24)[:60]),
        ("rgb-no-body", _dds(DDPF_RGB, bitcount=32, masks=(0xFF0000, 0xFF00, 0xFF, 0), body=0)),
        ("rgb-zero-masks", _dds(DDPF_RGB, bitcount=24)),
        ("rgb-bitcount-7", _dds(DDPF_RGB, bitcount=7, masks=(0x7, 0x0, 0x0, 0))),
        ("dxt1-short", _dds(DDPF_FOURCC, b"DXT1", body=8)),
        ("dxt5-ok", _dds(DDPF_FOURCC, b"DXT5", body=64)),
        ("pal8", _dds(DDPF_PAL8, bitcount=8, body=1024 + 64)),
        ("zero-size", _dds(DDPF_RGB, bitcount=24, masks=(0xFF0000, 0xFF00, 0xFF, 0), width=0, height=0)),
        ("huge", _dds(DDPF_FOURCC, b"DXT1", width=60_000, height=60_000)),
    ]
    return [(f"dds-unsupported/{n}", d) for n, d in unsupported] + [(f"dds/{n}", d) for n, d in odd]


def _psd(channels: int, depth: int, mode: int, width: int = 4, height: int = 4, colour_data: bytes = b"",
         compression: int = 0) -> bytes:
    """A flattened Photoshop file: header, colour-mode data, empty resources and layers, image data."""
    head = b"8BPS" + struct.pack(">H6xHIIHH", 1, channels, height, width, depth, mode)
    plane = min(4096, max(1, width * depth // 8) * height)  # a bomb declares its size, it does not carry it
    data = struct.pack(">H", compression) + bytes(range(256)) * (channels * plane // 256 + 1)
    return head + struct.pack(">I", len(colour_data)) + colour_data + struct.pack(">II", 0, 0) + data


def psd_files() -> list[tuple[str, bytes]]:
    """PSD colour modes (bitmap, grey, indexed, RGB, CMYK, multichannel, duotone, Lab) and depths 1-32."""
    palette = bytes(range(256)) * 3
    cases = [("bitmap", 1, 1, 0, b""), ("grey", 1, 8, 1, b""), ("indexed", 1, 8, 2, palette), ("rgb", 3, 8, 3, b""),
             ("rgba", 4, 8, 3, b""), ("cmyk", 4, 8, 4, b""), ("multichannel", 2, 8, 7, b""), ("duotone", 1, 8, 8, b""),
             ("lab", 3, 8, 9, b""), ("rgb16", 3, 16, 3, b""), ("rgb32", 3, 32, 3, b""), ("grey16", 1, 16, 1, b""),
             ("mode-99", 3, 8, 99, b""), ("channels-0", 0, 8, 3, b""), ("channels-60", 60, 8, 3, b"")]
    out = [(f"psd/{n}", _psd(c, d, m, colour_data=cd)) for n, c, d, m, cd in cases]
    out.append(("psd/rle-garbage", _psd(3, 8, 3, compression=1)))
    out.append(("psd/zip-compression", _psd(3, 8, 3, compression=2)))
    return out


def _tga(image_type: int, depth: int, width: int = 4, height: int = 4, cmap: tuple[int, int] = (0, 0),
         descriptor: int = 0, body: bytes | None = None) -> bytes:
    """A Targa header (18 bytes), colour map and body."""
    cmap_len, cmap_depth = cmap
    head = struct.pack("<BBBHHBHHHHBB", 0, 1 if cmap_len else 0, image_type, 0, cmap_len, cmap_depth, 0, 0,
                       width, height, depth, descriptor)
    colour_map = bytes(cmap_len * ((cmap_depth + 7) // 8))
    pixels = body if body is not None else bytes(range(256)) * (width * height * max(depth, 8) // 8 // 256 + 1)
    return head + colour_map + pixels


def tga_files() -> list[tuple[str, bytes]]:
    """Targa image types (colour-mapped, true colour, grey, RLE) with odd depths and colour maps."""
    cases = [("cmap-15", 1, 8, (16, 15)), ("cmap-16", 1, 8, (16, 16)), ("cmap-24", 1, 8, (16, 24)),
             ("cmap-32", 1, 8, (16, 32)), ("true-15", 2, 15, (0, 0)), ("true-16", 2, 16, (0, 0)),
             ("grey-16", 3, 16, (0, 0)), ("rle-garbage", 10, 24, (0, 0)), ("type-4", 4, 8, (0, 0)),
             ("depth-7", 2, 7, (0, 0)), ("cmap-without-map", 1, 8, (0, 0)), ("cmap-depth-9", 1, 8, (4, 9))]
    out = [(f"tga/{n}", _tga(t, d, cmap=c)) for n, t, d, c in cases]
    out.append(("tga/bottom-right-origin", _tga(2, 24, descriptor=0x30)))
    return out


def _pcx(version: int, bpp: int, planes: int, encoding: int = 1, width: int = 8, height: int = 4) -> bytes:
    """A ZSoft PCX header (128 bytes) and a body of run-length or raw bytes."""
    bytes_per_line = (width * bpp + 7) // 8 + ((width * bpp + 7) // 8) % 2
    head = struct.pack("<BBBBHHHHHH", 10, version, encoding, bpp, 0, 0, width - 1, height - 1, 72, 72)
    head += bytes(48) + struct.pack("<BBHH", 0, planes, bytes_per_line, 1) + bytes(58)
    return head + bytes([0x41]) * (bytes_per_line * planes * height) + b"\x0c" + bytes(768)


def pcx_files() -> list[tuple[str, bytes]]:
    """PCX bit depths and plane counts, legal and not."""
    cases = [("1bit-1plane", 5, 1, 1), ("1bit-4planes", 5, 1, 4), ("2bit-1plane", 5, 2, 1), ("4bit-1plane", 5, 4, 1),
             ("8bit-1plane", 5, 8, 1), ("8bit-3planes", 5, 8, 3), ("8bit-4planes", 5, 8, 4), ("8bit-2planes", 5, 8, 2),
             ("16bit", 5, 16, 1), ("version-2", 2, 8, 1), ("raw-encoding", 5, 8, 3)]
    return [(f"pcx/{n}", _pcx(v, b, p, encoding=0 if "raw" in n else 1)) for n, v, b, p in cases]


def _bmp(width: int, height: int, bpp: int, compression: int = 0, header: int = 40, colours: int = 0,
         body: bytes | None = None) -> bytes:
    """A Windows bitmap: file header, info header of the given size, a grey palette for <= 8 bpp."""
    entries = min(256, colours or (2 ** bpp if bpp <= 8 else 0))  # a declared count past 256 is not written
    palette = b"".join(bytes([i, i, i, 0]) for i in range(entries))
    info = struct.pack("<IiiHHIIiiII", header, width, height, 1, bpp, compression, 0, 2835, 2835, colours, 0)
    info = info.ljust(header, b"\0")
    pixels = body if body is not None else bytes(((abs(width) * bpp + 31) // 32) * 4 * min(abs(height), 64))
    offset = 14 + len(info) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + palette + pixels


def bmp_files() -> list[tuple[str, bytes]]:
    """BMP depths, compressions and header versions, including ones Pillow refuses."""
    cases = [("2bpp", _bmp(8, 4, 2)), ("4bpp-rle", _bmp(8, 4, 4, compression=2, body=b"\x04\x11\0\1" * 8)),
             ("8bpp-rle", _bmp(8, 4, 8, compression=1, body=b"\x08\x05\0\1" * 8)), ("16bpp", _bmp(8, 4, 16)),
             ("32bpp", _bmp(8, 4, 32)), ("jpeg-compression", _bmp(8, 4, 24, compression=4)),
             ("png-compression", _bmp(8, 4, 24, compression=5)), ("compression-99", _bmp(8, 4, 24, compression=99)),
             ("bitfields-no-masks", _bmp(8, 4, 16, compression=3)), ("bpp-7", _bmp(8, 4, 7)),
             ("top-down", _bmp(8, -4, 24)), ("v5-header", _bmp(8, 4, 24, header=124)),
             ("header-size-13", _bmp(8, 4, 24, header=13)), ("zero-width", _bmp(0, 4, 24)),
             ("huge", _bmp(200_000, 200_000, 1)), ("palette-overflow", _bmp(8, 4, 8, colours=100_000))]
    return [(f"bmp/{n}", d) for n, d in cases]


def ico_files() -> list[tuple[str, bytes]]:
    """Icons: an entry pointing past the end, a zero-size entry, a PNG inside, a cursor."""
    png = _save(_noise("RGBA", (16, 16)), "PNG")
    entry = struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(png), 22)
    head = struct.pack("<HHH", 0, 1, 1)
    return [("ico/png-inside", head + entry + png),
            ("ico/offset-past-end", head + struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, 4000, 9000) + png),
            ("ico/no-entries", struct.pack("<HHH", 0, 1, 0)),
            ("ico/cursor", struct.pack("<HHH", 0, 2, 1) + entry + png),
            ("ico/bmp-garbage", head + struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, 64, 22) + bytes(64))]


def bomb_files() -> list[tuple[str, bytes]]:
    """Tiny files declaring enormous images (decompression bombs)."""
    return [("bomb/png-ihdr", _png(100_000, 100_000, 8, 2, b"", raw_rows=True)),
            ("bomb/png-just-over-cap", _png(5_000, 5_000, 1, 0, b"", raw_rows=True)),
            ("bomb/gif-screen", _gif_huge()),
            ("bomb/tiff", _tiff_huge()),
            ("bomb/psd", _psd(3, 8, 3, width=30_000, height=30_000)),
            ("bomb/jpeg-sof", _jpeg_huge()),
            ("bomb/strip-60000x1", _png(60_000, 1, 8, 0, bytes(60_000)))]  # gigabytes once its short side is 256


def _gif_huge() -> bytes:
    data = bytearray(_save(_noise("P"), "GIF"))
    data[6:10] = struct.pack("<HH", 65535, 65535)  # logical screen
    pos = data.index(b"\x2c")  # first image descriptor: left, top, width, height
    data[pos + 5:pos + 9] = struct.pack("<HH", 65535, 65535)
    return bytes(data)


def _tiff_huge() -> bytes:
    """A baseline greyscale TIFF whose one IFD declares 400,000 x 400,000 pixels over 16 bytes of strip."""
    tags = [(256, 4, 400_000), (257, 4, 400_000), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 8 + 2 + 9 * 12 + 4),
            (277, 3, 1), (278, 4, 400_000), (279, 4, 16)]
    ifd = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", t, k, 1, v) for t, k, v in tags)
    return b"II*\0" + struct.pack("<I", 8) + ifd + bytes(4) + bytes(16)


def _jpeg_huge() -> bytes:
    data = bytearray(_save(_noise(), "JPEG"))
    pos = data.index(b"\xff\xc0")  # SOF0: length, precision, height, width
    data[pos + 5:pos + 9] = struct.pack(">HH", 60_000, 60_000)
    return bytes(data)


def _exif_entry(tag: int, kind: int, count: int, value: bytes) -> bytes:
    """An EXIF block with one IFD entry written by hand (any type, count and 4-byte value field)."""
    return b"Exif\0\0II*\0" + struct.pack("<IHHHI", 8, 1, tag, kind, count) + value.ljust(4, b"\0") + bytes(4)


def exif_files() -> list[tuple[str, bytes]]:
    """EXIF orientation values 0-9 and 65535, an orientation stored as text, and corrupt EXIF blocks."""
    out = []
    for value in [0, *range(1, 9), 9, 65535]:
        exif = Image.Exif()
        exif[0x0112] = value
        out.append((f"exif/orientation-{value}", _save(_noise(), "JPEG", exif=exif.tobytes())))
    odd_entries = {"text": (2, 4, b"six\0"), "rational": (5, 1, struct.pack("<I", 26)), "count-0": (3, 0, bytes(4))}
    for name, (kind, count, value) in odd_entries.items():  # wrong type, offset to nowhere, no value
        out.append((f"exif/orientation-{name}", _save(_noise(), "JPEG", exif=_exif_entry(0x0112, kind, count, value))))
    out.append(("exif/garbage-block", _save(_noise(), "JPEG", exif=b"Exif\0\0" + bytes(range(256)) * 2)))
    out.append(("exif/cut-block", _save(_noise(), "JPEG", exif=Image.Exif().tobytes()[:10] + b"\xff" * 6)))
    six = Image.Exif()
    six[0x0112] = 6
    out.append(("exif/png-orientation-6", _save(_noise("RGBA"), "PNG", exif=six.tobytes())))
    eight = six.tobytes().replace(b"\x06\x00", b"\x08\x00")
    out.append(("exif/webp-orientation-8", _save(_noise(), "WEBP", exif=eight)))
    return out


def not_images() -> list[tuple[str, bytes]]:
    """Files that are no image at all."""
    return [("other/one-byte", b"\xff"), ("other/text", b"hello, not an image\n"),
            ("other/html", b"<!DOCTYPE html><html><body>404 Not Found</body></html>"),
            ("other/json", b'{"error": "rate limited"}'), ("other/svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>'),
            ("other/pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n"),
            ("other/zip", b"PK\x03\x04" + bytes(40)),
            ("other/noise", np.random.default_rng(3).bytes(512)), ("other/nul-bytes", bytes(4096)),
            ("other/eps-no-ghostscript", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"),
            ("other/jpeg-soi-only", b"\xff\xd8"), ("other/png-signature-only", b"\x89PNG\r\n\x1a\n"),
            ("other/gif-header-only", b"GIF89a"), ("other/riff-webp-header", b"RIFF\x10\0\0\0WEBPVP8 ")]


def fuzzed(seed: int = 0, per_file: int = 8) -> list[tuple[str, bytes]]:
    """Truncated, bit-flipped and byte-overwritten variants of the valid files (seeded)."""
    rng = np.random.default_rng(seed)
    bases = [(n, d) for n, d in valid_files() if n.split("/")[1].split("-")[0] in
             {"jpeg", "png", "gif", "tiff", "webp", "bmp", "ico", "pcx", "tga", "jp2", "qoi", "sgi", "dds", "ppm"}]
    out = []
    for name, data in bases:
        stem = name.split("/", 1)[1]
        for cut in (len(data) // 2, len(data) - 1, min(len(data) - 1, 40)):
            out.append((f"fuzz/{stem}/cut-{cut}", data[:cut]))
        for k in range(per_file):
            buf = bytearray(data)
            if k % 2 == 0:  # flip a few bits anywhere
                for pos in rng.integers(0, len(buf), 1 + k):
                    buf[pos] ^= 1 << int(rng.integers(0, 8))
            else:  # overwrite bytes in the header, where sizes and modes live
                pos = int(rng.integers(0, min(len(buf), 64)))
                buf[pos:pos + 2] = rng.bytes(2)
            out.append((f"fuzz/{stem}/mut-{k}", bytes(buf)))
    return out


def corpus() -> list[tuple[str, bytes]]:
    """Every file above, plus the empty file."""
    return ([("other/empty", b"")] + valid_files() + dds_files() + psd_files() + tga_files() + pcx_files()
            + bmp_files() + ico_files() + bomb_files() + exif_files() + not_images() + fuzzed())
