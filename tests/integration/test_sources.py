"""plantray.sources: open_source's dispatch and refusals, each Source's columns/check/label_counts (no Ray),
their datasets (real Ray), associatedMedia splitting, tar.gz archives, and refusals before Ray starts."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from plantray.config import ConfigError
from plantray.sources import BLOCK_ROWS, DarwinCoreArchive, ImageTree, Manifest, open_source
from plantray.sources.base import describe
from plantray.sources.dwca import (
    FROM_CORE,
    SKIP,
    associated_rows,
    associated_skip_reason,
    classify_media,
    mark_duplicates,
    read_file,
    split_media,
)
from plantray.sources.dwcameta import local_name, member_name, open_member, packing, read_meta
from plantray.sources.manifest import manifest_format, prepare_rows
from plantray.sources.tree import dir_labels, table_chunks
from tests.dwca_fixtures import Media, Occ, sample_rows, tar_dir, write_associated, write_gbif, zip_dir
from tests.helpers import tiny_model

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _touch(path, data: bytes = b"x") -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def _parquet(path, rows: dict) -> str:
    pq.write_table(pa.table(rows), path)
    return str(path)


def _csv(path, text: str) -> str:
    return _touch(path, text.encode())


# --- open_source: dispatch and refusals ----------------------------------------------------------------

def test_open_source_dispatches_on_suffix_and_layout(tmp_path):
    occs, media = sample_rows()
    archive = write_gbif(str(tmp_path / "dwca"), occs, media)
    _touch(tmp_path / "tree" / "Rosa canina" / "a.jpg")
    cases = {_parquet(tmp_path / "m.parquet", {"image_uri": ["a.jpg"]}): Manifest,
             _csv(tmp_path / "M.CSV", "image_uri\na.jpg\n"): Manifest,
             archive: DarwinCoreArchive,
             zip_dir(archive, str(tmp_path / "a.zip")): DarwinCoreArchive,
             tar_dir(archive, str(tmp_path / "a.tgz")): DarwinCoreArchive,
             tar_dir(archive, str(tmp_path / "a.tar.gz")): DarwinCoreArchive,
             str(tmp_path / "tree"): ImageTree}
    for uri, cls in cases.items():
        source = open_source(uri)
        assert type(source) is cls and source.uri == uri, uri


@pytest.mark.parametrize("uri, needle", [
    ("https://example.org/m.parquet", "an HTTP URL cannot be listed"),
    ("ftp://example.org/m.parquet", "unsupported scheme 'ftp'"),
    ("{tmp}/absent", "does not exist"),
    ("{tmp}/notes.txt", "neither a manifest (.parquet, .csv) nor a Darwin Core Archive (.zip, .tar.gz, .tgz)"),
])
def test_open_source_refusals_name_the_flag(tmp_path, uri, needle):
    _touch(tmp_path / "notes.txt")
    uri = uri.format(tmp=tmp_path)
    with pytest.raises(ConfigError) as e:
        open_source(uri)
    assert needle in str(e.value) and str(e.value).startswith(f"--input {uri!r}")
    with pytest.raises(ConfigError) as e:
        open_source(uri, flag="--data")
    assert str(e.value).startswith(f"--data {uri!r}")
    with pytest.raises(ConfigError) as e:
        open_source(uri, flag="--test t=")
    assert str(e.value).startswith(f"--test t={uri}")


def test_describe():
    assert describe("/d/m.parquet", "--input") == "--input '/d/m.parquet'"
    assert describe("s3://b/t", "--test leaves=") == "--test leaves=s3://b/t"


# --- Manifest ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("uri, fmt", [("a.parquet", "parquet"), ("s3://b/A.PARQUET", "parquet"),
                                      ("x/y.csv", "csv"), ("y.Csv", "csv"), ("y.csv.gz", None), ("dir/", None)])
def test_manifest_format(uri, fmt):
    assert manifest_format(uri) == fmt


def test_manifest_columns_from_parquet_footer_and_csv_header(tmp_path):
    p = _parquet(tmp_path / "m.parquet", {"image_uri": ["a.jpg"], "gbifID": ["1"], "scientificName": ["R"]})
    assert open_source(p).columns() == ["image_uri", "gbifID", "scientificName"]
    c = _csv(tmp_path / "m.csv", 'image_uri,"catalog, number",tag\n"a,b.jpg",00012,leaf\n')
    assert open_source(c).columns() == ["image_uri", "catalog, number", "tag"]


def test_manifest_columns_on_s3(s3, tmp_path):
    s3.put(_parquet(tmp_path / "m.parquet", {"gbifID": ["1"], "image_uri": ["a.jpg"]}), "plantray-test/src/m.parquet")
    s3.put(_csv(tmp_path / "m.csv", "image_uri,x\na,b\n"), "plantray-test/src/m.csv")
    assert open_source("s3://plantray-test/src/m.parquet").columns() == ["gbifID", "image_uri"]
    assert open_source("s3://plantray-test/src/m.csv").columns() == ["image_uri", "x"]


def test_manifest_check_refuses_missing_image_uri_and_unreadable(tmp_path):
    source = open_source(_parquet(tmp_path / "m.parquet", {"path": ["a.jpg"]}), flag="--data")
    with pytest.raises(ConfigError, match=r"^--data '.*m\.parquet': manifest has no 'image_uri' column"):
        source.check()
    with pytest.raises(ConfigError, match="cannot be read"):
        open_source(_touch(tmp_path / "bad.parquet", b"not parquet at all")).check()


def test_manifest_label_counts_read_the_label_column(tmp_path):
    labels = ["Rosa canina", None, "Rosa canina", "Acer campestre", "Rosa canina", ""]
    p = _parquet(tmp_path / "m.parquet", {"image_uri": [f"{i}.jpg" for i in range(6)], "scientificName": labels})
    assert open_source(p).label_counts() == {"Rosa canina": 3, "Acer campestre": 1, None: 2}
    # CSV labels stay strings (no inference), empty fields are unlabelled
    c = _csv(tmp_path / "m.csv", "image_uri,scientificName\na,1234\nb,\nc,1234\nd,Bellis perennis\n")
    assert open_source(c).label_counts() == {"1234": 2, None: 1, "Bellis perennis": 1}
    with pytest.raises(ConfigError, match="no scientificName column"):
        open_source(_parquet(tmp_path / "n.parquet", {"image_uri": ["a"]}), flag="--test t=").label_counts()


def test_prepare_rows_renames_reserved_and_resolves_sources():
    table = pa.table({"image_uri": ["a/x.jpg", "/abs/y.jpg", "s3://b/z.jpg", None], "error": ["e"] * 4})
    out = prepare_rows(table, "/data/set", frozenset({"error"}))
    assert out.column_names == ["image_uri", "input_error", "_source"]
    assert out["_source"].to_pylist() == ["/data/set/a/x.jpg", "/abs/y.jpg", "s3://b/z.jpg", None]


# --- ImageTree -------------------------------------------------------------------------------------------

def test_dir_labels():
    files = ["s3://b/root/Rosa canina/a.jpg", "s3://b/root/Rosa canina/sub/b.jpg", "s3://b/root/c.jpg"]
    assert dir_labels(files, "b/root/") == ["Rosa canina", "Rosa canina", None]
    assert dir_labels(["/t/Acer/x.png"], "/t") == ["Acer"]


def test_table_chunks():
    table = pa.table({"a": list(range(5))})
    assert [t.num_rows for t in table_chunks(table, 2)] == [2, 2, 1]
    assert [t.num_rows for t in table_chunks(table.slice(0, 0), 2)] == [0]


def test_tree_listing_columns_labels_and_check(tmp_path):
    root = tmp_path / "tree"
    wanted = [_touch(root / "Rosa canina" / "a.jpg"), _touch(root / "Rosa canina" / "deep" / "b.jpg"),
              _touch(root / "Acer" / "c.png"), _touch(root / "loose.jpg")]
    _touch(root / ".hidden" / "x.jpg")
    _touch(root / "_tmp.jpg")
    tree = open_source(str(root))
    assert tree.files == sorted(wanted)
    assert tree.columns() == ["image_uri"] and tree.columns(labels_from_dirs=True) == ["image_uri", "scientificName"]
    tree.check()
    assert tree.label_counts() == {"Rosa canina": 2, "Acer": 1, None: 1}
    os.makedirs(tmp_path / "empty" / "sub")
    with pytest.raises(ConfigError, match=r"--data '.*empty' holds no files"):
        open_source(str(tmp_path / "empty"), flag="--data").check()


# --- associatedMedia (pure) ------------------------------------------------------------------------------

@pytest.mark.parametrize("value, urls", [
    ("http://x/a.jpg|http://x/b.jpg", ["http://x/a.jpg", "http://x/b.jpg"]),
    (" http://x/a.jpg | http://x/b.jpg | ", ["http://x/a.jpg", "http://x/b.jpg"]),
    ("http://x/a.jpg, https://x/b.jpg;http://x/c.jpg ; ", ["http://x/a.jpg", "https://x/b.jpg", "http://x/c.jpg"]),
    ("http://x/a.jpg||,http://x/b.jpg", ["http://x/a.jpg", "http://x/b.jpg"]),
    ("https://iiif.x/i/0,0,512,512/full/0/default.jpg", ["https://iiif.x/i/0,0,512,512/full/0/default.jpg"]),
    ("https://x/a.jpg?w=1;h=2|https://x/b.jpg", ["https://x/a.jpg?w=1;h=2", "https://x/b.jpg"]),
    ("", []), (None, []), (" | ; , ", []),
])
def test_split_media(value, urls):
    assert split_media(value) == urls


@pytest.mark.parametrize("url, reason", [
    ("https://x/photos/1/original.jpeg?1588", None),
    ("https://x/photos/1/original", None),  # no suffix: kept, the decoder decides
    ("http://x/a.PNG#frag", None),
    ("http://x/song.mp3", "sound"),
    ("http://x/clip.mp4?t=1", "video"),
    ("http://x/page.html", "not an image"),
    ("http://x/scan.pdf", "not an image"),
    ("www.x.org/a.jpg", "no url"),
])
def test_associated_skip_reason(url, reason):
    assert associated_skip_reason(url) == reason


def test_associated_rows_one_per_url():
    core = pa.table({"gbifID": ["1", "2", "3"],
                     "associatedMedia": ["http://x/a.jpg | http://x/b.mp3", None, "http://x/c"]})
    out = associated_rows(core)
    assert out["gbifID"].to_pylist() == ["1", "1", "3"]
    assert out["image_uri"].to_pylist() == ["http://x/a.jpg", "http://x/b.mp3", "http://x/c"]
    assert out[SKIP].to_pylist() == [None, "sound", None]
    assert out[FROM_CORE].to_pylist() == [True] * 3 and out["license"].null_count == 3
    empty = associated_rows(core.slice(1, 1))
    assert empty.num_rows == 0 and empty.schema == out.schema


def test_mark_duplicates_prefers_the_multimedia_row():
    table = pa.table({"gbifID": ["1", "1", "1", "2"], "image_uri": ["a", "a", "b", "a"],
                      "license": [None, "CC0", None, None], SKIP: [None] * 4,
                      FROM_CORE: [True, False, True, True]})
    dup = "duplicate url in occurrence"
    assert mark_duplicates(table)[SKIP].to_pylist() == [dup, None, None, None]


# --- Darwin Core Archive structure (no Ray) ----------------------------------------------------------------

def test_member_name_and_packing():
    names = ["dwca/occurrence.txt", "occurrence.txt", "./meta.xml"]
    assert member_name(names, "occurrence.txt") == "occurrence.txt"
    assert member_name(names, "meta.xml") == "./meta.xml" and member_name(names, "media.txt") is None
    assert [packing(u) for u in ("a.zip", "s3://b/A.TGZ", "a.tar.gz", "dir/", "a.tar")] == \
        ["zip", "tar", "tar", "dir", "dir"]


def test_read_meta_associated_media(tmp_path):
    occs = [Occ("1", "urn:1", "Rosa canina")]
    meta = read_meta(write_associated(str(tmp_path / "a"), occs, {"1": "http://x/a.jpg"}))
    assert meta.media == [] and [s.location for s in meta.associated] == ["observations.csv"]
    assert meta.associated[0].columns == {"gbifID": 0, "associatedMedia": 4} and meta.associated[0].kind == "associated"
    both = read_meta(write_associated(str(tmp_path / "b"), occs, {}, extension=[Media("1", "http://x/b.jpg")]))
    assert [s.location for s in both.media] == ["media.csv"] and len(both.associated) == 1


@pytest.mark.parametrize("folder", ["", "dwca", "."])
def test_read_meta_from_tar_gz(tmp_path, folder):
    occs, media = sample_rows()
    tgz = tar_dir(write_gbif(str(tmp_path / "a"), occs, media), str(tmp_path / "a.tgz"), folder=folder)
    meta = read_meta(tgz)
    prefix = f"{folder}/" if folder else ""
    assert (meta.core.member, meta.media[0].member) == (f"{prefix}occurrence.txt", f"{prefix}multimedia.txt")
    sizes = [os.path.getsize(tmp_path / "a" / n) for n in ("occurrence.txt", "multimedia.txt")]
    assert meta.size_bytes == sum(sizes) and meta.core.delimiter == "\t"


@pytest.mark.parametrize("term, name", [("http://purl.org/dc/terms/type", "type"), ("dc:type", "type"),
                                        ("http://rs.tdwg.org/ac/terms/accessURI", "accessURI"),
                                        ("http://ns.adobe.com/xap/1.0/rights/Owner", "Owner"),
                                        ("http://example.org/vocab#license", "license"), ("identifier", "identifier")])
def test_local_name(term, name):
    assert local_name(term) == name


def test_classify_media_adds_skip_in_the_image_schema():
    columns = {"gbifID": ["1", "2", "3"], "image_uri": ["http://x/a.jpg", "http://x/s", ""],
               "format": [None, "audio/ogg", None], "type": ["StillImage", None, "StillImage"],
               "license": ["CC0", None, None], "rightsHolder": [None] * 3, "creator": [None] * 3,
               "references": [None] * 3}
    table = pa.table(columns, schema=pa.schema([(c, pa.string()) for c in columns]))  # as read_file makes them
    out = classify_media(table)
    assert out[SKIP].to_pylist() == [None, "sound", "no url"] and out[FROM_CORE].to_pylist() == [False] * 3
    assert out["license"].to_pylist() == ["CC0", None, None]
    assert out.schema == associated_rows(pa.table({"gbifID": ["1"], "associatedMedia": ["http://x/a"]})).schema


@pytest.mark.parametrize("packed", ["dir", "zip", "tgz"])
def test_open_member_streams_each_file(tmp_path, packed):
    occs, media = sample_rows()
    root = write_gbif(str(tmp_path / "a"), occs, media)
    uri = root
    if packed == "zip":
        uri = zip_dir(root, str(tmp_path / "a.zip"), folder="x")
    elif packed == "tgz":
        uri = tar_dir(root, str(tmp_path / "a.tgz"), folder="x")
    meta = read_meta(uri)
    for spec in (meta.core, *meta.media):
        with open_member(uri, spec.member) as f, open(os.path.join(root, spec.location), "rb") as want:
            assert f.read() == want.read()


def test_read_file_streams_associated_media_without_ray(tmp_path):
    occs = [Occ("1", "urn:1", "Rosa canina"), Occ("2", "urn:2", "Acer campestre")]
    root = write_associated(str(tmp_path / "a"), occs, {"1": "http://x/a.jpg|http://x/b.mp4", "2": "http://x/c"})
    with open(f"{root}/observations.csv", "a") as f:
        f.write('"3","urn:3"\n')  # too few fields: counted as a malformed row
    meta = read_meta(root)
    table = pa.concat_tables(read_file(meta.associated[0]))
    assert table["gbifID"].to_pylist() == ["1", "1", "2", None]
    assert table["image_uri"].to_pylist() == ["http://x/a.jpg", "http://x/b.mp4", "http://x/c", None]
    assert table[SKIP].to_pylist() == [None, "video", None, "malformed row"]
    core = pa.concat_tables(read_file(meta.core))
    assert core["gbifID"].to_pylist() == ["1", "2"] and core["publisherScientificName"].to_pylist() == \
        ["Rosa canina", "Acer campestre"]


def _bad_archives(tmp_path) -> dict[str, tuple[str, str]]:
    """name -> (archive URI, the message it must be refused with)."""
    occs, media = sample_rows()
    good = write_gbif(str(tmp_path / "good"), occs, media)
    no_meta = str(tmp_path / "no_meta.zip")
    with zipfile.ZipFile(no_meta, "w") as zf:
        zf.writestr("occurrence.txt", "gbifID\n1\n")
    taxon = write_gbif(str(tmp_path / "taxon"), occs, media)
    with open(f"{taxon}/meta.xml") as f:
        text = f.read().replace("dwc/terms/Occurrence", "dwc/terms/Taxon")
    with open(f"{taxon}/meta.xml", "w") as f:
        f.write(text)
    no_images = write_associated(str(tmp_path / "no_images"), occs, {})
    with open(f"{no_images}/meta.xml") as f:
        text = f.read().replace('<field index="4" term="http://rs.tdwg.org/dwc/terms/associatedMedia"/>', "")
    with open(f"{no_images}/meta.xml", "w") as f:
        f.write(text)
    broken = _touch(tmp_path / "broken.tgz", b"\x1f\x8b\x08\x00garbage")
    tar_no_meta = str(tmp_path / "no_meta.tar.gz")
    with tarfile.open(tar_no_meta, "w:gz") as tf:
        tf.add(f"{good}/occurrence.txt", "occurrence.txt")
    return {"no meta.xml": (no_meta, "has no meta.xml"),
            "taxon core": (zip_dir(taxon, str(tmp_path / "taxon.zip")), "core is 'http://rs.tdwg.org/dwc/terms/Taxon'"),
            "no image source": (zip_dir(no_images, str(tmp_path / "no_images.zip")),
                                "no multimedia extension"),
            "broken tgz": (broken, "unreadable Darwin Core Archive"),
            "tgz without meta.xml": (tar_no_meta, "has no meta.xml")}


def test_archive_check_refusals(tmp_path):
    for name, (uri, needle) in _bad_archives(tmp_path).items():
        source = open_source(uri)
        assert isinstance(source, DarwinCoreArchive)
        with pytest.raises(ConfigError) as e:
            source.check()
        assert needle in str(e.value) and str(e.value).startswith(f"--input {uri!r}"), name


def test_archive_columns_and_no_labels(tmp_path):
    occs, media = sample_rows()
    source = open_source(write_gbif(str(tmp_path / "a"), occs, media))
    source.check()
    assert source.columns() == ["gbifID", "image_uri", "format", "type", "license", "rightsHolder", "creator",
                                "references", "occurrenceID", "datasetKey", "basisOfRecord", "countryCode",
                                "publisherScientificName", "verbatimScientificName"]
    with pytest.raises(ConfigError, match="no scientificName column"):
        source.label_counts()


# --- datasets (real Ray) ---------------------------------------------------------------------------------

def test_manifest_dataset_blocks_renames_and_sources(ray_session, tmp_path):
    n = 3 * BLOCK_ROWS + 5
    p = _parquet(tmp_path / "m.parquet", {"image_uri": [f"img/{i}.jpg" for i in range(n)],
                                          "scientificName": ["x"] * n, "gbifID": [str(i) for i in range(n)]})
    ds, stats = open_source(p).dataset(reserved=frozenset({"scientificName"}))
    blocks = list(ds.iter_batches(batch_size=None, batch_format="pyarrow"))
    assert stats == {} and all(b.num_rows <= BLOCK_ROWS for b in blocks) and sum(b.num_rows for b in blocks) == n
    rows = sorted((r for b in blocks for r in b.to_pylist()), key=lambda r: int(r["gbifID"]))
    assert set(rows[0]) == {"image_uri", "input_scientificName", "gbifID", "_source"}
    assert [r["_source"] for r in rows] == [os.path.join(str(tmp_path), f"img/{i}.jpg") for i in range(n)]


def test_csv_manifest_dataset_keeps_identifiers_as_strings(ray_session, tmp_path):
    c = _csv(tmp_path / "m.csv", "image_uri,gbifID\na.jpg,000123\nb.jpg,7\n")
    ds, _ = open_source(c).dataset()
    assert sorted(r["gbifID"] for r in ds.take_all()) == ["000123", "7"]


def test_tree_dataset_with_labels(ray_session, tmp_path):
    root = tmp_path / "tree"
    files = [_touch(root / "Rosa canina" / "a.jpg"), _touch(root / "Acer" / "b.jpg"), _touch(root / "c.jpg")]
    ds, stats = open_source(str(root)).dataset(labels_from_dirs=True)
    rows = {r["image_uri"]: r for r in ds.take_all()}
    assert stats == {} and set(rows) == set(files)
    assert [rows[f]["scientificName"] for f in files] == ["Rosa canina", "Acer", None]
    assert all(r["_source"] == u for u, r in rows.items())
    plain, _ = open_source(str(root)).dataset()
    assert "scientificName" not in plain.columns()


# --- refused before Ray starts (end to end) ----------------------------------------------------------------

@pytest.mark.subprocess
@pytest.mark.slow
def test_bad_archive_refused_before_ray(tmp_path):
    """With RAY_ADDRESS pointing where no Ray runs, reaching for Ray would hang in retries (not exit 2):
    an exit 2 naming the archive's problem shows every archive check ran first."""
    model = str(tmp_path / "model")
    tiny_model(model)
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:1", "PYTHONPATH": REPO}
    cases = {k: v for k, v in _bad_archives(tmp_path).items() if k in ("no meta.xml", "taxon core", "no image source")}
    for name, (uri, needle) in cases.items():
        proc = subprocess.run([sys.executable, "-m", "plantray", "classify", "--model", model, "--input", uri,
                               "--output", str(tmp_path / "out")], capture_output=True, text=True, timeout=240,
                              env=env, cwd=REPO)
        assert proc.returncode == 2, (name, proc.stderr[-2000:])
        assert needle in proc.stderr and f"--input {uri!r}" in proc.stderr, (name, proc.stderr[-2000:])
        assert not os.path.exists(tmp_path / "out")
