"""Test-time crops: geometry, mirrors, reproducible random crops, and softmax averaging in one forward."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import TenCrop

from plantray.images import crops as tta
from plantray.images.loader import LoadOptions, load_batch, preprocess
from plantray.images.presets import EvalPreset
from plantray.inference.predictor import CropPredictor
from plantray.model.artifact import load_artifact, make_card, save_artifact
from plantray.model.labels import Labels
from plantray.model.network import Network, build_model

PRESET = EvalPreset(crop_size=32, resize_size=40)


def _noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")  # lossless: decoded pixels equal the array written
    return buf.getvalue()


def _coordinate_image(width: int, height: int) -> Image.Image:
    """Each pixel holds its own (x, y) in red and green: a crop's first pixel says where it was cut."""
    x, y = np.meshgrid(np.arange(width), np.arange(height))
    return Image.fromarray(np.stack([x, y, np.zeros_like(x)], axis=-1).astype(np.uint8))


def test_five_crop_boxes_on_known_size():
    # 50 x 40 image, 32-pixel crops: corners at x in {0, 18}, y in {0, 8}; centre at ((50-32)//2, (40-32)//2).
    crops = tta.make_crops(_coordinate_image(50, 40), PRESET, "ten-crop")  # 40 = resize_size: no resampling
    boxes = [(int(c[0, 0, 0]), int(c[0, 0, 1]), int(c[0, 0, 0]) + 32, int(c[0, 0, 1]) + 32) for c in crops[:5]]
    assert boxes == [(0, 0, 32, 32), (18, 0, 50, 32), (0, 8, 32, 40), (18, 8, 50, 40),
                     (9, 4, 41, 36)]


def test_ten_crop_pixels_and_mirrors():
    img = _noise_image(50, 40)  # shorter side already 40 = resize_size: no resampling
    arr = np.asarray(img)
    crops = tta.make_crops(img, PRESET, "ten-crop")
    assert crops.shape == (10, 32, 32, 3) and crops.dtype == np.uint8
    for i, (x, y) in enumerate([(0, 0), (18, 0), (0, 8), (18, 8), (9, 4)]):
        np.testing.assert_array_equal(crops[i], arr[y:y + 32, x:x + 32])
        np.testing.assert_array_equal(crops[5 + i], np.flip(arr[y:y + 32, x:x + 32], axis=1))


def test_center_matches_the_cards_preprocessing():
    img = _noise_image(70, 55, seed=2)
    for mode in ("none", "center"):
        crops = tta.make_crops(img, PRESET, mode)
        np.testing.assert_array_equal(crops[0], preprocess(_png(img), PRESET))


def test_random_ten_crop_reproducible_and_in_bounds():
    w, h = 60, 40
    first = tta.random_crop_params(w, h, tta.image_rng(0, "a.jpg"))
    assert first == tta.random_crop_params(w, h, tta.image_rng(0, "a.jpg"))
    assert first != tta.random_crop_params(w, h, tta.image_rng(0, "b.jpg"))
    assert first != tta.random_crop_params(w, h, tta.image_rng(1, "a.jpg"))
    assert len(first) == 10 and any(m for _, m in first) and not all(m for _, m in first)
    for (left, top, right, bottom), _ in first:
        assert 0 <= left < right <= w and 0 <= top < bottom <= h
        cw, ch = right - left, bottom - top
        if (cw, ch) != (40, 40):  # not the fallback square
            assert 0.7 * 0.95 <= cw * ch / (w * h) <= 1.0
            assert 3 / 4 * 0.9 <= cw / ch <= 4 / 3 * 1.1


def test_random_ten_crop_pixels_follow_the_params():
    img = _noise_image(60, 40, seed=3)
    crops = tta.make_crops(img, PRESET, "random-ten-crop", tta.image_rng(5, "x"))
    assert crops.shape == (10, 32, 32, 3)
    np.testing.assert_array_equal(crops, tta.make_crops(img, PRESET, "random-ten-crop", tta.image_rng(5, "x")))
    for crop, (box, mirror) in zip(crops, tta.random_crop_params(60, 40, tta.image_rng(5, "x"))):
        expected = np.asarray(img.crop(box).resize((32, 32), Image.BILINEAR))  # crop, then resize the crop
        np.testing.assert_array_equal(crop, np.flip(expected, axis=1) if mirror else expected)


def test_ten_crop_matches_torchvisions_TenCrop_of_the_resized_image():
    img = _noise_image(70, 52, seed=6)
    resized = img.resize((54, 40), Image.BILINEAR)  # shorter side 52 -> 40 = resize_size, 70 -> 53.8 -> 54
    theirs = [np.asarray(c) for c in TenCrop(32)(resized)]  # five crops, then five crops of the mirrored image
    ours = tta.make_crops(img, PRESET, "ten-crop")
    np.testing.assert_array_equal(ours[:5], np.stack(theirs[:5]))
    # torchvision mirrors the image first, so its left corners come from our right ones and vice versa.
    np.testing.assert_array_equal(ours[5:], np.stack([theirs[i] for i in (6, 5, 8, 7, 9)]))


def test_ten_crop_centre_follows_torchvisions_rounding_on_odd_margins():
    arr = np.asarray(_coordinate_image(51, 40))  # 51 - 32 = 19: the centre starts at 9.5 -> 10 (round half even)
    crops = tta.make_crops(Image.fromarray(arr), PRESET, "ten-crop")
    np.testing.assert_array_equal(crops[4], arr[4:36, 10:42])
    np.testing.assert_array_equal(crops[9], arr[4:36, 10:42][:, ::-1])
    for i, (x, y) in enumerate([(0, 0), (19, 0), (0, 8), (19, 8)]):
        np.testing.assert_array_equal(crops[i], arr[y:y + 32, x:x + 32])
        np.testing.assert_array_equal(crops[5 + i], arr[y:y + 32, x:x + 32][:, ::-1])


def test_random_ten_crop_uses_the_cards_interpolation():
    img = _noise_image(60, 40, seed=8)
    preset = EvalPreset(crop_size=32, resize_size=40, interpolation="bicubic")
    crops = tta.make_crops(img, preset, "random-ten-crop", tta.image_rng(2, "y"))
    for crop, (box, mirror) in zip(crops, tta.random_crop_params(60, 40, tta.image_rng(2, "y"))):
        expected = np.asarray(img.crop(box).resize((32, 32), Image.BICUBIC))
        np.testing.assert_array_equal(crop, np.flip(expected, axis=1) if mirror else expected)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch.manual_seed(0)
    labels = Labels(["Rosa canina", "Quercus robur", "Salvia pratensis"], genus=["Rosa", "Quercus", "Salvia"],
                    train_images=[20, 20, 20])
    model, prov = build_model("resnet18", len(labels), "random")
    uri = str(tmp_path_factory.mktemp("model"))
    save_artifact(uri, model, labels, make_card("resnet18", labels, PRESET, prov))
    return uri


@pytest.mark.parametrize("mode", ["ten-crop", "random-ten-crop"])
def test_averaged_prediction_equals_mean_of_single_crops(tmp_path, tiny_model, mode):
    paths = []
    for i, size in enumerate([(50, 40), (45, 64)]):
        paths.append(str(tmp_path / f"{i}.png"))
        _noise_image(*size, seed=10 + i).save(paths[-1])
    paths.append(str(tmp_path / "broken.jpg"))
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    table = pa.table({"image_uri": paths, "_source": paths, "scientificName": ["Rosa canina"] * 3,
                      "genus": [None] * 3, "family": [None] * 3})
    cropped = load_batch(table, tta.CropView(PRESET, mode, seed=4), LoadOptions(max_bytes=10**6))
    assert cropped.column("error").to_pylist() == [None, None, "not an image"]

    out = CropPredictor(tiny_model, "m", crops=10, ks=(1, 2)).__call__(cropped)
    net = Network(load_artifact(tiny_model), torch.device("cpu"))
    for row, path in enumerate(paths[:2]):
        crops = tta.make_crops(Image.open(path).convert("RGB"), PRESET, mode, tta.image_rng(4, path))
        single = torch.stack([net.probabilities(c[None])[0] for c in crops]).mean(0)  # one forward per crop
        conf, idx = single.topk(2)
        np.testing.assert_allclose(out.column("topk_confidence")[row].as_py(), conf.numpy(), rtol=1e-4, atol=1e-6)
        names = load_artifact(tiny_model).labels.names
        assert out.column("topk_scientificName")[row].as_py() == [names[i] for i in idx]
        assert out.column("correct@2")[row].as_py() == ("Rosa canina" in [names[i] for i in idx])
    assert out.column("topk_scientificName")[2].as_py() is None and out.column("correct@1")[2].as_py() is None
    assert out.column("true_genus").to_pylist() == ["Rosa"] * 3  # from the model's labels when the test lacks it
