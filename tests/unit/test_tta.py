"""Test-time crops: geometry, mirrors, reproducible random crops, and softmax averaging in one forward."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
import torch
import torchvision
from PIL import Image
from torchvision.transforms.v2 import TenCrop

from plantray.images import crops as tta
from plantray.images.loader import LoadOptions, load_batch, preprocess
from plantray.images.presets import EvalPreset
from plantray.inference.predictor import CropPredictor
from plantray.model.artifact import make_card, save_artifact
from plantray.model.labels import Labels
from tests.crop_boxes import BoxReader, separable_image

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
    # By hand: the shorter side 55 -> 40 and 70 -> 70 * 40 / 55 = 50.9 -> 51; the centre 32-square of the
    # 51 x 40 image starts at ((51 - 32) // 2, (40 - 32) // 2) = (9, 4).
    expected = np.asarray(img.resize((51, 40), Image.BILINEAR))[4:36, 9:41]
    for mode in ("none", "center"):
        crops = tta.make_crops(img, PRESET, mode)
        assert crops.shape == (1, 32, 32, 3)
        np.testing.assert_array_equal(crops[0], expected)
        np.testing.assert_array_equal(crops[0], preprocess(_png(img), PRESET))  # classify sees the same pixels


def test_random_ten_crop_reproducible_and_in_bounds():
    w, h = 60, 40
    first = tta.random_crop_params(w, h, tta.image_rng(0, "a.jpg"))
    assert first == tta.random_crop_params(w, h, tta.image_rng(0, "a.jpg"))
    assert first != tta.random_crop_params(w, h, tta.image_rng(0, "b.jpg"))
    assert first != tta.random_crop_params(w, h, tta.image_rng(1, "a.jpg"))
    assert len(first) == 10 and any(m for _, m in first) and not all(m for _, m in first)
    _assert_random_test_crops(first, w, h)
    # The loader's view: the same crops for the same (seed, image), other crops for another image or seed.
    img = _noise_image(w, h, seed=1)
    view = tta.CropView(PRESET, "random-ten-crop", seed=0)(img, {"image_uri": "a.jpg"})
    np.testing.assert_array_equal(view, tta.CropView(PRESET, "random-ten-crop", seed=0)(img, {"image_uri": "a.jpg"}))
    assert not np.array_equal(view, tta.CropView(PRESET, "random-ten-crop", seed=0)(img, {"image_uri": "b.jpg"}))
    assert not np.array_equal(view, tta.CropView(PRESET, "random-ten-crop", seed=1)(img, {"image_uri": "a.jpg"}))


def _assert_random_test_crops(params: list, w: int, h: int) -> None:
    """Ten (box, mirror) pairs inside a w x h image, of 70-100% of its area and aspect 3/4-4/3 (up to
    rounding), unless the fallback (the largest centred square); some mirrored, some not."""
    assert len(params) == 10 and any(m for _, m in params) and not all(m for _, m in params)
    side = min(w, h)
    fallback = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    for box, _ in params:
        left, top, right, bottom = box
        assert 0 <= left < right <= w and 0 <= top < bottom <= h
        cw, ch = right - left, bottom - top
        if box != fallback:
            assert 0.7 * 0.95 <= cw * ch / (w * h) <= 1.0
            assert 3 / 4 * 0.9 <= cw / ch <= 4 / 3 * 1.1
    assert len({box for box, _ in params}) >= 5  # ten draws, not one box over and over


def test_random_ten_crop_pixels_follow_the_params():
    img = separable_image(60, 40, seed=3)  # shorter side already 40 = resize_size: no resampling
    crops = tta.make_crops(img, PRESET, "random-ten-crop", tta.image_rng(5, "x"))
    assert crops.shape == (10, 32, 32, 3)
    np.testing.assert_array_equal(crops, tta.make_crops(img, PRESET, "random-ten-crop", tta.image_rng(5, "x")))
    # Each crop is PIL's crop of one box, resized (then maybe mirrored): read back from its pixels alone.
    reader = BoxReader(img, 32)
    read = [reader.read(crop) for crop in crops]
    _assert_random_test_crops(read, 60, 40)
    assert read == tta.random_crop_params(60, 40, tta.image_rng(5, "x"))  # the drawn boxes, in order


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
    img = separable_image(60, 40, seed=8)
    preset = EvalPreset(crop_size=32, resize_size=40, interpolation="bicubic")
    crops = tta.make_crops(img, preset, "random-ten-crop", tta.image_rng(2, "y"))
    reader = BoxReader(img, 32, Image.BICUBIC)
    read = [reader.read(crop) for crop in crops]  # every pixel PIL's bicubic
    _assert_random_test_crops(read, 60, 40)
    assert read == tta.random_crop_params(60, 40, tta.image_rng(2, "y"))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A random resnet18 of three classes, saved as a model directory; returns (directory, the network)."""
    torch.manual_seed(0)
    labels = Labels(["Rosa canina", "Quercus robur", "Salvia pratensis"], genus=["Rosa", "Quercus", "Salvia"],
                    train_images=[20, 20, 20])
    model = torchvision.models.resnet18(num_classes=len(labels)).eval()
    uri = str(tmp_path_factory.mktemp("model"))
    save_artifact(uri, model, labels, make_card("resnet18", labels, PRESET, {"init": "random"}))
    return uri, model


def _hand_ten_crops(img: Image.Image) -> np.ndarray:
    """ten-crop by hand: corners and centre of the 32-square, then their mirrors (centre offsets rounded
    half to even, as torchvision's CenterCrop)."""
    arr, (w, h) = np.asarray(img), img.size
    corners = [(0, 0), (w - 32, 0), (0, h - 32), (w - 32, h - 32), (round((w - 32) / 2), round((h - 32) / 2))]
    five = [arr[y:y + 32, x:x + 32] for x, y in corners]
    return np.stack(five + [c[:, ::-1] for c in five])


def _hand_mean_softmax(model: torch.nn.Module, crops: np.ndarray) -> np.ndarray:
    """The softmax of each crop through ``model`` (one forward per crop), averaged, written out by hand."""
    mean, std = np.array(PRESET.mean), np.array(PRESET.std)
    probs = []
    for crop in crops:
        x = (crop.astype(np.float64) / 255 - mean) / std  # HWC, normalised as the card says
        with torch.no_grad():
            logits = model(torch.from_numpy(x.transpose(2, 0, 1)[None]).float())[0].double().numpy()
        e = np.exp(logits - logits.max())
        probs.append(e / e.sum())
    return np.mean(probs, axis=0)


@pytest.mark.parametrize("mode", ["ten-crop", "random-ten-crop"])
def test_averaged_prediction_equals_mean_of_single_crops(tmp_path, tiny_model, mode):
    model_uri, model = tiny_model
    paths, resized = [], []
    # 50 x 40 needs no resize; 45 x 64 -> 40 x (64 * 40 / 45 = 56.9 -> 57), resized by PIL here.
    for i, (size, new_size) in enumerate([((50, 40), (50, 40)), ((45, 64), (40, 57))]):
        paths.append(str(tmp_path / f"{i}.png"))
        img = separable_image(*size, seed=10 + i)
        img.save(paths[-1])
        resized.append(img.resize(new_size, Image.BILINEAR))
    paths.append(str(tmp_path / "broken.jpg"))
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    # The crops are seeded by image_uri (the record's URI), read from _source: a fixed URI gives the same draws
    # on every run, where tmp_path's name would give other draws each run (and, once in 512, all mirrored or none).
    uris = [f"https://images.example.org/{i}.png" for i in range(3)]
    table = pa.table({"image_uri": uris, "_source": paths, "scientificName": ["Rosa canina"] * 3,
                      "genus": [None] * 3, "family": [None] * 3})
    cropped = load_batch(table, tta.CropView(PRESET, mode, seed=4), LoadOptions(max_bytes=10**6))
    assert cropped.column("error").to_pylist() == [None, None, "not an image"]

    out = CropPredictor(model_uri, "m", crops=10, ks=(1, 2)).__call__(cropped)
    names = ["Rosa canina", "Quercus robur", "Salvia pratensis"]
    for row, img in enumerate(resized):
        crops = np.frombuffer(cropped.column("_pixels")[row].as_py(), np.uint8).reshape(10, 32, 32, 3)
        if mode == "ten-crop":
            np.testing.assert_array_equal(crops, _hand_ten_crops(img))
        else:  # each crop is PIL's crop of a box of the resized image, read back from its pixels
            reader = BoxReader(img, 32)
            _assert_random_test_crops([reader.read(c) for c in crops], *img.size)
        # A re-run of this image (same seed, same URI) scores the very same pixels.
        again = tta.CropView(PRESET, mode, seed=4)(Image.open(paths[row]).convert("RGB"), {"image_uri": uris[row]})
        np.testing.assert_array_equal(crops, again)
        expected = _hand_mean_softmax(model, crops)
        order = np.argsort(-expected)[:2]
        np.testing.assert_allclose(out.column("topk_confidence")[row].as_py(), expected[order], rtol=1e-4,
                                   atol=1e-6)
        assert out.column("topk_scientificName")[row].as_py() == [names[i] for i in order]
        assert out.column("correct@2")[row].as_py() == ("Rosa canina" in [names[i] for i in order])
    assert out.column("topk_scientificName")[2].as_py() is None and out.column("correct@1")[2].as_py() is None
    assert out.column("true_genus").to_pylist() == ["Rosa"] * 3  # from the model's labels when the test lacks it
