"""URIs that open: outputs keep image_uri as given and add the absolute URI; the archive references it."""

from __future__ import annotations

import pathlib
import zipfile

from plantray.cli import main
from tests.helpers import jpeg_bytes, read_output, tiny_model, write


def test_relative_manifest_entries_get_an_absolute_uri(ray_session, tmp_path):
    data = tmp_path / "my data"  # a space: the file:// URI percent-encodes it
    write(str(data / "photos" / "a b.jpg"), jpeg_bytes(seed=1))
    write(str(data / "photos" / "c.jpg"), jpeg_bytes(seed=2))
    (data / "in.csv").write_text("image_uri,gbifID\nphotos/a b.jpg,1\nphotos/c.jpg,2\n")
    model = str(tmp_path / "m")
    tiny_model(model)
    out = str(tmp_path / "preds")
    assert main(["classify", "--model", model, "--input", str(data / "in.csv"), "--output", out,
                 "--num-actors", "1"]) == 0
    rows = {r["image_uri"]: r for r in read_output(out).to_pylist()}
    assert set(rows) == {"photos/a b.jpg", "photos/c.jpg"}  # as given: the user's key
    for given, row in rows.items():
        expected = "file://" + str((data / given).resolve()).replace(" ", "%20")
        assert row["image_uri_absolute"] == expected
        assert pathlib.Path(row["image_uri_absolute"].removeprefix("file://").replace("%20", " ")).is_file()
        assert row["identificationReferences"].split(" | ")[0] == expected

    archive = str(tmp_path / "ids.zip")
    assert main(["export", "dwca", out, archive]) == 0
    with zipfile.ZipFile(archive) as zf:
        lines = zf.read("identification.txt").decode().splitlines()
    header = lines[0].split("\t")
    refs = sorted(line.split("\t")[header.index("identificationReferences")].split(" | ")[0] for line in lines[1:])
    assert refs == sorted(r["image_uri_absolute"] for r in rows.values())
