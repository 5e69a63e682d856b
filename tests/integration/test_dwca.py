"""Darwin Core Archive input: meta.xml parsing, skip rules, dedup, the occurrence join, zip/dir, local/S3,
and ``plantray classify`` over an archive whose image URLs are served by a real HTTP server."""

from __future__ import annotations

import io
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pyarrow.dataset as pads
import pytest
from PIL import Image

from plantray.config import ConfigError
from plantray.sources import open_source
from plantray.sources.dwca import SKIP, mark_duplicates, read_dwca, skip_reason
from plantray.sources.dwcameta import read_meta
from tests.dwca_fixtures import (
    Media,
    Occ,
    expected_images,
    expected_skips,
    sample_rows,
    tar_dir,
    write_associated,
    write_gbif,
    write_publisher,
    zip_dir,
)

# --- pure functions ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, fmt, url, reason", [
    ("StillImage", None, "http://x/a.jpg", None),
    ("http://purl.org/dc/dcmitype/StillImage", None, "http://x/a", None),
    ("Image", "", "https://x/a.png", None),
    ("Sound", "image/jpeg", "http://x/a.jpg", "sound"),  # the DCMI type wins over the format
    ("MovingImage", None, "http://x/a.mp4", "video"),
    ("Text", None, "http://x/a.pdf", "not an image"),
    (None, "audio/ogg", "http://x/a", "sound"),
    (None, "video/mp4", "http://x/a", "video"),
    (None, "image/tiff", "http://x/a", None),
    (None, "application/pdf", "http://x/a", "not an image"),
    (None, None, "http://x/a.JPG?size=large", None),  # neither declared: the URL's suffix decides
    (None, None, "http://x/page.html", "not an image"),
    ("StillImage", None, None, "no url"),
    ("StillImage", None, "not a url", "no url"),
])
def test_skip_reason(kind, fmt, url, reason):
    assert skip_reason(kind, fmt, url) == reason


def test_mark_duplicates_keeps_one_per_occurrence_and_url():
    table = pa.table({"gbifID": ["1", "1", "1", "2", "1", "2"],
                      "image_uri": ["a", "a", "b", "a", "a", "a"],
                      SKIP: [None, None, None, None, "sound", None]})
    out = mark_duplicates(table)[SKIP].to_pylist()
    dup = "duplicate url in occurrence"
    assert out == [None, dup, None, None, "sound", dup]


def _meta(tmp_path, core_row_type="http://rs.tdwg.org/dwc/terms/Occurrence", extension=True, location="m.txt"):
    ext = ('<extension rowType="http://rs.gbif.org/terms/1.0/Multimedia"><files><location>'
           f'{location}</location></files><coreid index="0"/></extension>') if extension else ""
    (tmp_path / "meta.xml").write_text(f'<archive xmlns="http://rs.tdwg.org/dwc/text/"><core rowType='
                                       f'"{core_row_type}"><files><location>o.txt</location></files>'
                                       f'<id index="0"/></core>{ext}</archive>')
    (tmp_path / "o.txt").write_text("1\n")
    (tmp_path / "m.txt").write_text("1\n")
    return str(tmp_path)


def test_meta_errors_are_config_errors(tmp_path):
    read_meta(_meta(tmp_path))  # valid
    with pytest.raises(ConfigError, match="no multimedia extension"):
        read_meta(_meta(tmp_path, extension=False))
    with pytest.raises(ConfigError, match="Taxon"):
        read_meta(_meta(tmp_path, core_row_type="http://rs.tdwg.org/dwc/terms/Taxon"))
    with pytest.raises(ConfigError, match="names 'missing.txt', which the archive lacks"):
        read_meta(_meta(tmp_path, location="missing.txt"))
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="unreadable"):
        read_meta(str(tmp_path / "bad.zip"))


def test_meta_dialect_from_meta_xml(tmp_path):
    occs, media = sample_rows()
    gbif = read_meta(write_gbif(str(tmp_path / "g"), occs, media))
    assert (gbif.core.delimiter, gbif.core.quote, gbif.core.header_lines) == ("\t", "", 1)
    pub = read_meta(write_publisher(str(tmp_path / "p"), occs, media))
    assert (pub.core.delimiter, pub.core.quote, pub.core.columns["gbifID"]) == (",", '"', 2)
    assert pub.core.defaults == {"basisOfRecord": "PreservedSpecimen"}
    assert pub.media[0].columns["image_uri"] == 3 and pub.media[0].columns["license"] == 2


# --- reading archives with Ray ---------------------------------------------------------------------------

def _rows(ds) -> list[dict]:
    # Test-sized datasets only: the library never collects.
    return ds.take_all()


def check_archive(uri: str, occs: list[Occ], media: list[Media], key: str) -> None:
    """Every still image with a URL exactly once, skips counted exactly, occurrence columns joined."""
    ds, stats = read_dwca(uri)
    rows = _rows(ds)
    expected = expected_images(occs, media, key)
    pairs = [(r["gbifID"], r["image_uri"]) for r in rows]
    assert sorted(pairs) == sorted(expected)  # equal lists: exactly once each
    assert stats["skipped"] == expected_skips(media)
    assert stats["rows"] == len(media) and stats["images"] == len(expected)
    assert stats["unmatched_images"] == sum(1 for cid, _ in expected if cid not in {getattr(o, key) for o in occs})
    by_key = {getattr(o, key): o for o in occs}
    for r in rows:
        m = expected[(r["gbifID"], r["image_uri"])]
        assert (r["license"], r["rightsHolder"], r["creator"]) == (m.license, m.rightsHolder, m.creator)
        occ = by_key.get(r["gbifID"])
        if occ is None:  # orphan image: kept, occurrence columns null
            assert r["occurrenceID"] is None and r["publisherScientificName"] is None
            continue
        assert r["occurrenceID"] == occ.occurrenceID
        assert r["publisherScientificName"] == occ.scientificName
        assert r["countryCode"] == occ.countryCode
        if key == "id":  # GBIF layout carries every column
            assert (r["basisOfRecord"], r["datasetKey"]) == (occ.basisOfRecord, occ.datasetKey)
            assert r["verbatimScientificName"] == occ.scientificName.upper()
        else:  # publisher layout: basisOfRecord only as meta.xml's default
            assert r["basisOfRecord"] == "PreservedSpecimen" and r["datasetKey"] is None


def pack(root: str, packed: str, tmp_path) -> str:
    """``root`` as a directory, a zip or a tar.gz (``-folder``: the files one folder down)."""
    folder = "dwca" if packed.endswith("-folder") else ""
    if packed.startswith("zip"):
        return zip_dir(root, str(tmp_path / "a.zip"), folder=folder)
    if packed.startswith("tgz"):
        return tar_dir(root, str(tmp_path / "a.tgz"), folder=folder)
    return root


@pytest.mark.parametrize("layout", ["gbif", "publisher"])
@pytest.mark.parametrize("packed", ["dir", "zip", "zip-folder", "tgz", "tgz-folder"])
def test_read_local_archive(ray_session, tmp_path, layout, packed):
    occs, media = sample_rows()
    write = write_gbif if layout == "gbif" else write_publisher
    root = write(str(tmp_path / "a"), occs, media)
    check_archive(pack(root, packed, tmp_path), occs, media, "id" if layout == "gbif" else "occurrenceID")


@pytest.mark.parametrize("packed", ["dir", "zip", "tgz"])
def test_read_archive_on_s3(ray_session, s3, tmp_path, packed):
    occs, media = sample_rows()
    root = write_gbif(str(tmp_path / "a"), occs, media) if packed != "zip" else write_publisher(
        str(tmp_path / "a"), occs, media)
    prefix = f"plantray-test/dwca-{packed}"
    if packed == "dir":
        s3.put(root, prefix, recursive=True)
        check_archive(f"s3://{prefix}", occs, media, "id")
    else:
        packed_file = pack(root, packed, tmp_path)
        name = os.path.basename(packed_file)
        s3.put(packed_file, f"{prefix}/{name}")
        check_archive(f"s3://{prefix}/{name}", occs, media, "id" if packed == "tgz" else "occurrenceID")


# associatedMedia as publishers write it: "|" (GBIF's separator), "," and ";", stray blanks and separators.
ASSOCIATED_RAW = {"1": " {u}/a.jpg | {u}/b.jpg |", "2": "{u}/c.jpg", "3": "",
                  "4": "{u}/a.jpg, {u}/a.jpg;{u}/song.mp3 ; {u}/photos/9/original", "5": "{u}/page.html"}
# The same lists written out by hand: what each occurrence's images are.
ASSOCIATED_URLS = {"1": ["a.jpg", "b.jpg"], "2": ["c.jpg"], "3": [], "4": ["a.jpg", "a.jpg", "song.mp3",
                                                                          "photos/9/original"], "5": ["page.html"]}


def associated_archive(root: str, u: str, extension: list[Media] | None = None) -> list[Occ]:
    occs = [Occ(i, f"urn:occ:{i}", f"Species {i}", countryCode="NL") for i in ASSOCIATED_RAW]
    write_associated(root, occs, {k: v.format(u=u) for k, v in ASSOCIATED_RAW.items()}, extension)
    return occs


@pytest.mark.parametrize("packed", ["dir", "zip", "tgz-folder"])
def test_read_associated_media(ray_session, tmp_path, packed):
    u = "http://img.example.org"
    occs = associated_archive(str(tmp_path / "a"), u)
    source = open_source(pack(str(tmp_path / "a"), packed, tmp_path))
    source.check()
    ds, stats = source.dataset()
    rows = ds.take_all()
    got = sorted((r["gbifID"], r["image_uri"]) for r in rows)
    assert got == [("1", f"{u}/a.jpg"), ("1", f"{u}/b.jpg"), ("2", f"{u}/c.jpg"), ("4", f"{u}/a.jpg"),
                   ("4", f"{u}/photos/9/original")]
    assert stats["rows"] == sum(len(v) for v in ASSOCIATED_URLS.values()) and stats["images"] == 5
    assert stats["skipped"] == {"duplicate url in occurrence": 1, "sound": 1, "not an image": 1}
    assert stats["extensions"] == [] and stats["associated_media"] is True and stats["unmatched_images"] == 0
    by_id = {o.id: o for o in occs}
    for r in rows:
        occ = by_id[r["gbifID"]]
        assert (r["occurrenceID"], r["publisherScientificName"], r["countryCode"]) == \
            (occ.occurrenceID, occ.scientificName, "NL")
        assert r["license"] is None and r["_source"] == r["image_uri"]


def test_associated_media_and_multimedia_both_contribute(ray_session, tmp_path):
    u = "http://img.example.org"
    extension = [Media("1", f"{u}/a.jpg", license="CC0", creator="A. Uthor"),  # also in associatedMedia
                 Media("2", f"{u}/x.jpg", license="CC BY 4.0"), Media("2", f"{u}/s.mp3", kind="sound")]
    associated_archive(str(tmp_path / "a"), u, extension)
    ds, stats = read_dwca(str(tmp_path / "a"))
    rows = {(r["gbifID"], r["image_uri"]): r for r in ds.take_all()}
    assert sorted(rows) == [("1", f"{u}/a.jpg"), ("1", f"{u}/b.jpg"), ("2", f"{u}/c.jpg"), ("2", f"{u}/x.jpg"),
                            ("4", f"{u}/a.jpg"), ("4", f"{u}/photos/9/original")]
    # the multimedia row (with its licence) is the one kept; the associatedMedia copy is the duplicate
    assert (rows[("1", f"{u}/a.jpg")]["license"], rows[("1", f"{u}/a.jpg")]["creator"]) == ("CC0", "A. Uthor")
    assert rows[("1", f"{u}/b.jpg")]["license"] is None and rows[("2", f"{u}/x.jpg")]["license"] == "CC BY 4.0"
    assert stats["skipped"] == {"duplicate url in occurrence": 2, "sound": 2, "not an image": 1}
    assert stats["rows"] == 11 and stats["images"] == 6 and stats["extensions"] == ["media.csv"]


def test_malformed_rows_are_counted_not_fatal(ray_session, tmp_path):
    occs, media = sample_rows()
    root = write_gbif(str(tmp_path / "a"), occs, media)
    with open(f"{root}/multimedia.txt", "a") as f:
        f.write("101\tStillImage\ttoo few fields\n")
    ds, stats = read_dwca(root)
    assert stats["skipped"]["malformed row"] == 1
    assert ds.count() == len(expected_images(occs, media))


# --- classify over an archive with images on a real HTTP server ------------------------------------------

def _jpeg(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 40), colour).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def image_server():
    images = {"/a.jpg": _jpeg((200, 30, 30)), "/b.jpg": _jpeg((30, 200, 30)), "/c.jpg": _jpeg((30, 30, 200))}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            body = images.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "image/jpeg" if body else "text/plain")
            self.send_header("Content-Length", str(len(body or b"gone")))
            self.end_headers()
            self.wfile.write(body or b"gone")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def tiny_model(path: str, names: list[str]) -> str:
    """A random resnet18 with 32 px crops, saved as a plantray model directory."""
    from plantray.images.presets import EvalPreset
    from plantray.model.artifact import make_card, save_artifact
    from plantray.model.labels import Labels
    from plantray.model.network import build_model

    model, provenance = build_model("resnet18", len(names), "random")
    labels = Labels(names, genus=[n.split()[0] for n in names], family=["Rosaceae"] * len(names))
    card = make_card("resnet18", labels, EvalPreset(crop_size=32, resize_size=36), provenance, version="t1")
    save_artifact(path, model, labels, card)
    return path


def archive_for_server(root: str, base: str) -> tuple[list[Occ], list[Media]]:
    occs = [Occ("1", "urn:o:1", "Rosa canina"), Occ("2", "urn:o:2", "Prunus avium", countryCode="ES")]
    media = [Media("1", f"{base}/a.jpg", license="CC0"), Media("1", f"{base}/b.jpg", license="CC BY 4.0"),
             Media("1", f"{base}/a.jpg", license="CC0"), Media("2", f"{base}/c.jpg", license="CC BY-NC"),
             Media("2", f"{base}/missing.jpg", license="CC BY"), Media("2", f"{base}/s.mp3", kind="sound")]
    write_gbif(root, occs, media)
    return occs, media


@pytest.mark.slow
def test_classify_archive_end_to_end(ray_session, tmp_path, image_server):
    from plantray.cli import main

    occs, media = archive_for_server(str(tmp_path / "a"), image_server)
    archive = zip_dir(str(tmp_path / "a"), str(tmp_path / "gbif.zip"))
    model = tiny_model(str(tmp_path / "model"), ["Rosa canina", "Prunus avium", "Quercus robur"])
    out = str(tmp_path / "pred")
    assert main(["classify", "--model", model, "--input", archive, "--output", out, "--num-actors", "1",
                 "--http-timeout", "5"]) == 0
    table = pads.dataset(out, format="parquet").to_table()
    rows = {r["image_uri"]: r for r in table.to_pylist()}
    assert table.num_rows == 4 and set(rows) == {m.url for m in media if m.kind == "image"}
    missing = rows[f"{image_server}/missing.jpg"]
    assert missing["error"] == "http 404" and missing["scientificName"] is None
    for m in media[:5]:
        r = rows[m.url]
        assert (r["gbifID"], r["license"], r["occurrenceID"]) == (m.coreid, m.license, f"urn:o:{m.coreid}")
        if m.url != missing["image_uri"]:
            assert r["error"] is None and r["scientificName"] in {"Rosa canina", "Prunus avium", "Quercus robur"}
    # The predictions export as an archive that an independent reader accepts.
    from dwca.read import DwCAReader

    exported = str(tmp_path / "identifications.zip")
    assert main(["export", "dwca", out, exported]) == 0
    with DwCAReader(exported) as dwca:
        core = {row.id: [e.data["http://rs.tdwg.org/dwc/terms/identificationReferences"] for e in row.extensions
                         if e.rowtype == "http://rs.tdwg.org/dwc/terms/Identification"] for row in dwca}
    assert {k: sorted(v) for k, v in core.items()} == {"1": sorted({media[0].url, media[1].url}),
                                                       "2": [media[3].url]}
