"""Unit tests of the tag-aware training augmentation (pure functions, no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import ColorJitter

from plantray.images.augment import FILL, TAG_POLICY, TrainPreset, augment, colour_jitter, upright_policy
from plantray.images.crops import random_crop_box
from plantray.training.data import class_weights
from tests.crop_boxes import BoxReader, separable_image

SKY, GROUND = (90, 150, 240), (120, 80, 30)


def sky_over_ground(width: int = 96, height: int = 80) -> Image.Image:
    """A blue upper half over a brown lower half: which way is up is obvious from the colours."""
    arr = np.zeros((height, width, 3), np.uint8)
    arr[: height // 2] = SKY
    arr[height // 2:] = GROUND
    return Image.fromarray(arr)


def blueness(arr: np.ndarray) -> float:
    """Mean blue minus red: high for sky, negative for ground."""
    return float(arr[..., 2].astype(float).mean() - arr[..., 0].astype(float).mean())


def upside_down(out: np.ndarray) -> bool:
    """True when the bottom band looks clearly more like sky than the top band."""
    h = out.shape[0]
    return blueness(out[h * 3 // 4:]) > blueness(out[: h // 4]) + 30


def test_habit_is_never_rotated_or_flipped_upside_down():
    preset = TrainPreset(image_size=48, vflip=1.0, rotation=180.0)  # would flip/rotate anything allowed to
    img = sky_over_ground()
    for seed in range(200):
        out = augment(img, "habit", preset, np.random.default_rng(seed))
        assert not upside_down(out), seed
        assert blueness(out[:4]) > blueness(out[-4:]) - 30, seed  # the sky never ends up below the ground


@pytest.mark.parametrize("tag", ["flower", "leaf", "bark", None, "something-unknown"])
def test_other_tags_do_get_flipped_or_rotated(tag):
    preset = TrainPreset(image_size=48)
    img = sky_over_ground()
    flipped = sum(upside_down(augment(img, tag, preset, np.random.default_rng(seed))) for seed in range(100))
    # vflip p=0.5 -> about half the views are upside down; a binomial(100, .5) is within 25..75 almost surely
    assert 25 <= flipped <= 75


def test_rotation_alone_is_applied_to_non_habit_tags():
    preset = TrainPreset(image_size=48, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0, vflip=0, rotation=180.0,
                         shear=0, translate=0, brightness=0, contrast=0, saturation=0)
    img = sky_over_ground()
    rotated = sum(upside_down(augment(img, "leaf", preset, np.random.default_rng(s))) for s in range(100))
    upright = sum(upside_down(augment(img, "habit", preset, np.random.default_rng(s))) for s in range(100))
    assert rotated >= 20  # angles beyond +-90 degrees put the sky at the bottom
    assert upright == 0


@pytest.mark.parametrize("size", [32, 64, 224])
def test_output_size_and_dtype(size):
    out = augment(sky_over_ground(300, 200), "flower", TrainPreset(image_size=size), np.random.default_rng(0))
    assert out.shape == (size, size, 3) and out.dtype == np.uint8


def test_zero_magnitudes_give_a_deterministic_resize_and_centre_crop():
    preset = TrainPreset(image_size=40, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0, vflip=0, rotation=0, shear=0,
                         translate=0, brightness=0, contrast=0, saturation=0)
    rng_img = np.random.default_rng(7).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    img = Image.fromarray(rng_img)
    outs = [augment(img, "flower", preset, np.random.default_rng(s)) for s in range(5)]
    # Expected independently: shorter side 60 -> 40 (90 -> 60), then the central 40x40 square.
    expected = np.asarray(img.resize((60, 40), Image.BILINEAR).crop((10, 0, 50, 40)))
    for out in outs:
        np.testing.assert_array_equal(out, expected)


def test_magnitudes_are_configurable():
    img = sky_over_ground()
    calm = TrainPreset(image_size=48, brightness=0, contrast=0, saturation=0)
    wild = TrainPreset(image_size=48, brightness=0.9, contrast=0.9, saturation=0.9)
    spread = [np.std([augment(img, "bark", p, np.random.default_rng(s)).mean() for s in range(40)])
              for p in (calm, wild)]
    assert spread[1] > spread[0] * 2


def test_policy_is_a_table_with_a_default_row():
    preset = TrainPreset()
    assert preset.allowed("habit") == TAG_POLICY["habit"]
    assert preset.allowed(None) == TAG_POLICY["default"] == preset.allowed("no-such-tag")
    assert preset.allowed(" Habit ") == TAG_POLICY["habit"]
    custom = upright_policy(["habit", "stem"])
    assert custom["stem"]["vflip"] is False and custom["stem"]["rotate"] is False and custom["stem"]["hflip"]


CALM = dict(hflip=0, vflip=0, rotation=0, shear=0, translate=0, brightness=0, contrast=0, saturation=0)


def _noise(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_random_resized_crop_is_the_drawn_box_cropped_then_resized():
    img = separable_image(90, 60, seed=1)
    reader = BoxReader(img, 32)
    preset = TrainPreset(image_size=32, **CALM)
    boxes = []
    for seed in range(20):
        view = augment(img, "leaf", preset, np.random.default_rng(seed))
        # PIL's own crop of one box, resized: the box is read back from the view's pixels alone.
        box, mirrored = reader.read(view)
        left, top, right, bottom = box
        assert not mirrored  # hflip 0
        assert 0 <= left < right <= 90 and 0 <= top < bottom <= 60  # inside the image
        assert 0.35 * 0.95 <= (right - left) * (bottom - top) / (90 * 60) <= 1.0
        assert 3 / 4 * 0.9 <= (right - left) / (bottom - top) <= 4 / 3 * 1.1
        # ... and it is random_crop_box's draw, the first from the image's generator (train and test share it).
        assert box == random_crop_box(90, 60, preset.scale, preset.ratio, np.random.default_rng(seed))
        boxes.append(box)
    assert len(set(boxes)) >= 15  # a fresh box per seed, not a fixed crop


def test_colour_jitter_is_torchvisions_ColorJitter_with_the_same_parameters():
    img = _noise(40, 30, seed=2)
    preset = TrainPreset(brightness=0.4, contrast=0.5, saturation=0.6)
    for seed in range(10):
        # The draws in the documented order: the permutation, then one factor per magnitude.
        rng = np.random.default_rng(seed)
        order = rng.permutation(3)
        b, c, s = (rng.uniform(max(0, 1 - x), 1 + x) for x in (0.4, 0.5, 0.6))
        params = dict(fn_idx=torch.tensor(order), brightness_factor=b, contrast_factor=c, saturation_factor=s,
                      hue_factor=None)
        expected = ColorJitter(brightness=0.4, contrast=0.5, saturation=0.6).transform(img, params)
        ours = colour_jitter(img, preset, np.random.default_rng(seed))
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(expected))


def test_colour_factors_span_torchvisions_range():
    grey = Image.new("RGB", (8, 8), (100, 100, 100))  # brightness scales it without clipping up to 2.55x
    ratios = [np.asarray(colour_jitter(grey, TrainPreset(brightness=0.3, contrast=0, saturation=0),
                                       np.random.default_rng(s))).mean() / 100 for s in range(300)]
    assert 0.7 - 0.01 <= min(ratios) < 0.75 and 1.25 < max(ratios) <= 1.3 + 0.01
    wide = [np.asarray(colour_jitter(grey, TrainPreset(brightness=1.5, contrast=0, saturation=0),
                                     np.random.default_rng(s))).mean() / 100 for s in range(300)]
    assert min(wide) < 0.2 and max(wide) > 2.0  # [max(0, 1 - 1.5), 1 + 1.5] = [0, 2.5]


def _shift(base: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``base`` moved right by dx and down by dy, uncovered pixels set to the fill (independent of torchvision)."""
    out = np.empty_like(base)
    out[:] = FILL
    h, w = base.shape[:2]
    out[max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)] = base[max(0, -dy):h - max(0, dy),
                                                                     max(0, -dx):w - max(0, dx)]
    return out


def test_translation_is_a_whole_pixel_shift_filled_with_the_imagenet_mean():
    preset = TrainPreset(image_size=40, scale=(1.0, 1.0), ratio=(1.0, 1.0), **{**CALM, "translate": 0.1})
    img = _noise(40, 40, seed=3)  # already 40 x 40: the deterministic crop leaves it as it is
    base = np.asarray(img)
    moved = 0
    for seed in range(30):
        out = augment(img, "habit", preset, np.random.default_rng(seed))
        shifts = [(dx, dy) for dx in range(-4, 5) for dy in range(-4, 5) if np.array_equal(out, _shift(base, dx, dy))]
        assert len(shifts) == 1, seed  # exactly one shift within +-10% of the side explains the output
        moved += shifts[0] != (0, 0)
    assert moved >= 25


def test_class_weights():
    counts = [100, 25, 4]
    assert class_weights(counts, "none") == pytest.approx([1.0, 1.0, 1.0])
    inv = class_weights(counts, "inverse")
    # n_c * w_c equal for every class, and sum n_c w_c = sum n_c
    assert [n * w for n, w in zip(counts, inv)] == pytest.approx([129 / 3] * 3)
    sq = class_weights(counts, "sqrt")
    raw = [1 / 10, 1 / 5, 1 / 2]
    scale = 129 / (100 / 10 + 25 / 5 + 4 / 2)
    assert sq == pytest.approx([r * scale for r in raw])
