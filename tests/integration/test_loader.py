"""The one loader: bytes from any URI -> decoded -> a view, or one reason; the same byte cap everywhere."""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from plantray import reasons
from plantray.images.crops import CropView
from plantray.images.loader import EvalView, LoadOptions, load_batch, load_one, read_image, stack_pixels
from plantray.images.presets import EvalPreset
from tests.helpers import jpeg_bytes, write

PRESET = EvalPreset(crop_size=16, resize_size=18)


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_dir(tmp_path):
    """A real HTTP server on 127.0.0.1 serving ``tmp_path``; yields (directory, base URL)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_one_byte_cap_for_local_files_and_http(http_dir):
    root, base = http_dir
    big = jpeg_bytes(120, 100, seed=1, fmt="PNG")  # noise PNG: thousands of bytes
    write(str(root / "big.png"), big)
    small = LoadOptions(max_bytes=len(big) - 1)
    for uri in (str(root / "big.png"), f"{base}/big.png"):
        assert load_one(uri, {}, EvalView(PRESET), small) == (None, reasons.FILE_TOO_LARGE)
        pixels, error = load_one(uri, {}, EvalView(PRESET), LoadOptions(max_bytes=len(big)))
        assert error is None and len(pixels) == 16 * 16 * 3


def test_same_cause_same_name_whatever_the_source(http_dir):
    root, base = http_dir
    write(str(root / "empty.jpg"), b"")
    write(str(root / "page.html"), b"<html>not a plant</html>")
    for uri in (str(root / "empty.jpg"), f"{base}/empty.jpg"):
        assert load_one(uri, {}, EvalView(PRESET))[1] == reasons.EMPTY_FILE
    for uri in (str(root / "page.html"), f"{base}/page.html"):
        assert load_one(uri, {}, EvalView(PRESET))[1] == reasons.NOT_AN_IMAGE
    assert load_one(str(root / "nothing.jpg"), {}, EvalView(PRESET))[1] == reasons.NOT_FOUND
    assert load_one(f"{base}/nothing.jpg", {}, EvalView(PRESET))[1] == "http 404"
    assert load_one("ftp://example.org/x.jpg", {}, EvalView(PRESET))[1] == "unsupported scheme ftp"
    assert load_one("", {}, EvalView(PRESET))[1] == reasons.NO_URI


def test_eval_view_is_resize_then_centre_crop(tmp_path):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), np.uint8))
    path = str(tmp_path / "a.png")
    img.save(path)
    got = np.frombuffer(load_one(path, {}, EvalView(PRESET))[0], np.uint8).reshape(16, 16, 3)
    # independent: PIL resize of the shorter side to 18 (40x30 -> 24x18), then the central 16x16
    expected = np.asarray(img.resize((24, 18), Image.BILINEAR, reducing_gap=3.0))[1:17, 4:20]
    np.testing.assert_array_equal(got, expected)


def test_a_view_that_raises_costs_one_row(tmp_path):
    class Broken:
        min_side, columns = 16, ()

        def __call__(self, img, row):
            raise ZeroDivisionError

    path = write(str(tmp_path / "a.jpg"), jpeg_bytes())
    assert load_one(path, {}, Broken()) == (None, f"{reasons.INTERNAL_ERROR}: ZeroDivisionError")


def test_load_batch_keeps_every_row_and_stack_pixels_restores_shape(tmp_path):
    good = [write(str(tmp_path / f"{i}.jpg"), jpeg_bytes(40, 30, seed=i)) for i in range(2)]
    uris = [good[0], str(tmp_path / "missing.jpg"), good[1]]
    table = pa.table({"image_uri": uris, "_source": uris})
    out = load_batch(table, CropView(PRESET, "ten-crop"), LoadOptions())
    assert out.num_rows == 3 and out.column("error").to_pylist() == [None, reasons.NOT_FOUND, None]
    images, rows = stack_pixels(out.column("_pixels"), (10, 16, 16, 3))
    assert images.shape == (20, 16, 16, 3) and rows.tolist() == [0, 2]
    flat, rows = stack_pixels(load_batch(table, EvalView(PRESET)).column("_pixels"), (16, 16, 3))
    assert flat.shape == (2, 16, 16, 3) and rows.tolist() == [0, 2]


def test_read_image_and_fetch_config_share_the_cap():
    assert LoadOptions(max_bytes=1234).fetch_config().max_bytes == 1234
    with pytest.raises(Exception, match="not found"):
        read_image("/no/such/file.jpg")
