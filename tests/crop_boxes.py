"""Which box of an image a crop was cut from, read back from the crop's pixels without the code under test.

A *separable* noise image has a red channel that varies only along x and a green channel that varies only
along y. PIL resamples rows and columns separately, so the red row of any crop-and-resize of such an image
depends only on the box's (left, right) and its green column only on (top, bottom). Resizing every span of
the image's one red row (and one green column) with PIL gives a table from resized line to span; a crop's
box is then two look-ups, checked by cutting that box with PIL and comparing every pixel.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

Box = tuple[int, int, int, int]  # PIL crop box: left, top, right, bottom


def separable_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """Red: noise along x, the same in every row; green: noise along y, the same in every column."""
    rng = np.random.default_rng(seed)
    arr = np.zeros((height, width, 3), np.uint8)
    arr[..., 0] = rng.integers(0, 256, width, dtype=np.uint8)[None, :]
    arr[..., 1] = rng.integers(0, 256, height, dtype=np.uint8)[:, None]
    arr[..., 2] = 128
    return Image.fromarray(arr)


def _span_table(line: np.ndarray, size: int, resample: int, min_len: int) -> dict[bytes, list[tuple[int, int]]]:
    """Each span [a, b) of ``line`` (at least ``min_len`` long) resized to ``size`` by PIL -> the spans giving it."""
    table: dict[bytes, list[tuple[int, int]]] = {}
    for a in range(len(line)):
        for b in range(a + min_len, len(line) + 1):
            key = np.asarray(Image.fromarray(line[None, a:b]).resize((size, 1), resample))[0].tobytes()
            table.setdefault(key, []).append((a, b))
    return table


class BoxReader:
    """Reads the box (and whether it was mirrored) of square crops of a :func:`separable_image`.

    Args:
        img: the separable image the crops were cut from (after any resize the code applies first).
        size: the crops' side.
        resample: PIL's filter the crops were resized with.
        min_len: the shortest box side looked for (spans of 1-2 pixels resize to near-constant lines
            that several spans share).
    """

    def __init__(self, img: Image.Image, size: int, resample: int = Image.BILINEAR, min_len: int = 3):
        self.img, self.size, self.resample = img, size, resample
        arr = np.asarray(img)
        self.xs = _span_table(arr[0, :, 0], size, resample, min_len)
        self.ys = _span_table(arr[:, 0, 1], size, resample, min_len)

    def expected(self, box: Box, mirror: bool) -> np.ndarray:
        """PIL's own crop of ``box`` resized to the crop size, mirrored if asked."""
        crop = np.asarray(self.img.crop(box).resize((self.size, self.size), self.resample))
        return crop[:, ::-1] if mirror else crop

    def read(self, crop: np.ndarray) -> tuple[Box, bool]:
        """The (box, mirrored) ``crop`` was cut from; fails unless exactly one box gives every pixel of it."""
        found = [(x, y, mirror) for mirror in (False, True)
                 for x in self.xs.get((crop[0, ::-1, 0] if mirror else crop[0, :, 0]).tobytes(), [])
                 for y in self.ys.get(crop[:, 0, 1].tobytes(), [])]
        assert len(found) == 1, f"crop matches {len(found)} boxes: {found}"
        (left, right), (top, bottom), mirror = found[0]
        box = (left, top, right, bottom)
        np.testing.assert_array_equal(crop, self.expected(box, mirror))
        return box, mirror
