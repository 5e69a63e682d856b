"""plantray.storage: URIs, filesystems (local and the tests' real S3 server) and the table's primitives."""

from __future__ import annotations

import importlib.util
import os
import pickle
import uuid

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from plantray import storage
from plantray.config import ConfigError
from plantray.storage import table as tbl

BUCKET = "plantray-storage"


@pytest.fixture(scope="module")
def s3_prefix(s3_server):
    """A fresh ``s3://`` prefix on the tests' S3 server, and an independent s3fs client to check it with."""
    import s3fs

    client = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server}, key="testing", secret="testing",
                               skip_instance_cache=True)
    if not client.exists(BUCKET):
        client.mkdir(BUCKET)
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}", client


# URIs


@pytest.mark.parametrize("uri,expected", [
    ("s3://bucket/key.jpg", "s3"), ("GS://bucket/key", "gs"), ("https://host/a.jpg", "https"),
    ("/data/a.jpg", "file"), ("relative/a.jpg", "file"), ("file:///data/a.jpg", "file"),
    ("C:/data/a.jpg", "file"),  # a Windows drive letter is not a scheme
])
def test_scheme(uri, expected):
    assert storage.scheme(uri) == expected


def test_join():
    assert storage.join("/data", "train", "a.jpg") == "/data/train/a.jpg"
    assert storage.join("s3://b/p", "train", "a.jpg") == "s3://b/p/train/a.jpg"
    assert storage.join("s3://b/p/", "a.jpg") == "s3://b/p/a.jpg"


def test_dirname(tmp_path, monkeypatch):
    assert storage.dirname("s3://b/p/x.parquet") == "s3://b/p"
    assert storage.dirname("s3://b/p/") == "s3://b"
    assert storage.dirname("/data/m.parquet") == "/data"
    monkeypatch.chdir(tmp_path)
    assert storage.dirname("sub/m.parquet") == f"{tmp_path}/sub"  # relative paths become absolute


@pytest.mark.parametrize("uri,base,expected", [
    ("train/a.jpg", "s3://b/ds", "s3://b/ds/train/a.jpg"),
    ("train/a.jpg", "/data/ds", "/data/ds/train/a.jpg"),
    ("/elsewhere/a.jpg", "s3://b/ds", "/elsewhere/a.jpg"),
    ("https://host/a.jpg", "/data/ds", "https://host/a.jpg"),
    ("s3://other/a.jpg", "/data/ds", "s3://other/a.jpg"),
    ("", "/data/ds", ""),
])
def test_resolve(uri, base, expected):
    assert storage.resolve(uri, base) == expected


def test_get_fs_local_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.get_fs("a/b.txt")[1] == f"{tmp_path}/a/b.txt"
    assert storage.get_fs(f"file://{tmp_path}/c.txt")[1] == f"{tmp_path}/c.txt"


# Local filesystem


def test_exists_and_holds_data_local(tmp_path):
    missing, empty_dir, full_dir = tmp_path / "missing", tmp_path / "empty", tmp_path / "full"
    empty_dir.mkdir()
    full_dir.mkdir()
    (full_dir / "x").write_bytes(b"1")
    (tmp_path / "zero").write_bytes(b"")
    assert [storage.exists(str(p)) for p in (missing, empty_dir, full_dir)] == [False, True, True]
    assert [storage.holds_data(str(p)) for p in (missing, empty_dir, full_dir)] == [False, False, True]
    assert storage.holds_data(str(tmp_path / "zero"))  # a file is data, even an empty one


def test_read_write_remove_local(tmp_path):
    uri = str(tmp_path / "a" / "b" / "obj.bin")
    storage.write_bytes(uri, b"first")  # parents are created
    storage.write_bytes(uri, b"second version")  # replaced whole
    assert storage.read_bytes(uri) == b"second version"
    assert (tmp_path / "a" / "b" / "obj.bin").read_bytes() == b"second version"
    assert os.listdir(tmp_path / "a" / "b") == ["obj.bin"]  # no temporary file left behind
    assert storage.read_bytes(uri, max_bytes=3) == b"seco"  # the cap plus one byte tells "too large"
    storage.remove(uri)
    assert not (tmp_path / "a" / "b" / "obj.bin").exists()
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(uri)
    storage.write_bytes(str(tmp_path / "tree" / "x" / "y"), b"1")
    storage.remove(str(tmp_path / "tree"))
    assert not (tmp_path / "tree").exists()
    storage.remove(str(tmp_path / "never-there"))  # absent: nothing to do, no error


def test_write_many_and_makedirs_local(tmp_path):
    files = {str(tmp_path / "d" / f"{i}.bin"): bytes([i]) * (i + 1) for i in range(3)}
    storage.write_many(files)
    assert {str(p): p.read_bytes() for p in (tmp_path / "d").iterdir()} == files
    storage.write_many({})
    storage.makedirs(str(tmp_path / "m" / "n"))
    assert (tmp_path / "m" / "n").is_dir()
    with pytest.raises(ValueError, match="one filesystem"):
        storage.write_many({str(tmp_path / "x"): b"1", "s3://b/x": b"2"})


def _tree(root) -> None:
    for rel in ["b.jpg", "a.jpg", "sub/c.jpg", ".hidden.jpg", "_SUCCESS", "_tmp/d.jpg", ".git/e.jpg",
                "sub/_f.jpg"]:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_list_files_local_skips_hidden_and_underscore(tmp_path):
    _tree(tmp_path)
    assert storage.list_files(str(tmp_path)) == [f"{tmp_path}/a.jpg", f"{tmp_path}/b.jpg", f"{tmp_path}/sub/c.jpg"]


def test_arrow_fs_local_write_and_read(tmp_path):
    table = pa.table({"x": [1, 2, 3], "y": ["a", "b", None]})
    fs, path = storage.arrow_fs(str(tmp_path / "t.parquet"))
    pq.write_table(table, path, filesystem=fs)
    assert pq.read_table(tmp_path / "t.parquet").equals(table)
    assert pq.read_table(path, filesystem=fs).equals(table)


# Missing filesystem packages


def test_missing_package_names_what_to_install():
    # A registered implementation whose module does not exist: what gs:// without gcsfs looks like.
    fsspec.register_implementation("plantraymissing", "plantray_no_such_fs.NoFileSystem", clobber=True)
    with pytest.raises(storage.MissingFilesystem, match="pip install plantray_no_such_fs") as info:
        storage.get_fs("plantraymissing://bucket/a.jpg")
    err = info.value
    assert (err.scheme, err.package) == ("plantraymissing", "plantray_no_such_fs")
    assert isinstance(err, ValueError) and not isinstance(err, ConfigError)
    with pytest.raises(storage.MissingFilesystem):
        storage.check_scheme("plantraymissing://bucket/a.jpg")
    with pytest.raises(storage.MissingFilesystem):
        storage.read_bytes("plantraymissing://bucket/a.jpg")
    copy = pickle.loads(pickle.dumps(err))  # travels between Ray processes
    assert (copy.scheme, copy.package, str(copy)) == (err.scheme, err.package, str(err))


@pytest.mark.skipif(importlib.util.find_spec("gcsfs") is not None, reason="gcsfs is installed here")
def test_missing_gcsfs_names_the_package():
    with pytest.raises(storage.MissingFilesystem, match="pip install gcsfs"):
        storage.check_scheme("gs://bucket/a.jpg")


@pytest.mark.parametrize("uri, protocol", [(None, "file"), ("file:///data/a.jpg", "file"), ("s3://bucket/key", "s3"),
                                           ("https://host/a.jpg", "https")])
def test_check_scheme_accepts_installed_schemes(s3_server, tmp_path, uri, protocol):
    uri = uri or str(tmp_path)
    assert storage.check_scheme(uri) is None  # accepted: no MissingFilesystem, no ValueError
    # ... and the filesystem it vouched for is the scheme's own fsspec implementation, as fsspec registers it.
    assert isinstance(storage.get_fs(uri)[0], fsspec.get_filesystem_class(protocol))


def test_check_scheme_refuses_what_fsspec_does_not_know():
    with pytest.raises(ValueError, match="nosuchscheme") as info:
        storage.check_scheme("nosuchscheme://bucket/a.jpg")
    assert not isinstance(info.value, storage.MissingFilesystem)  # nothing to install: the scheme is wrong


# S3 (the tests' moto server through AWS_ENDPOINT_URL)


def test_read_write_remove_s3(s3_prefix):
    prefix, client = s3_prefix
    uri = storage.join(prefix, "rw", "obj.bin")
    assert not storage.exists(uri)
    storage.write_bytes(uri, b"hello s3")
    assert client.cat_file(uri.removeprefix("s3://")) == b"hello s3"
    assert storage.read_bytes(uri) == b"hello s3"
    assert storage.read_bytes(uri, max_bytes=2) == b"hel"
    assert storage.exists(uri) and storage.holds_data(storage.join(prefix, "rw"))
    storage.remove(storage.join(prefix, "rw"))
    assert not storage.exists(uri) and not storage.holds_data(storage.join(prefix, "rw"))
    client.invalidate_cache()
    assert not client.exists(uri.removeprefix("s3://"))
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(uri)


def test_sees_objects_written_by_another_client(s3_prefix):
    prefix, client = s3_prefix
    root = storage.join(prefix, "other")
    storage.write_bytes(storage.join(root, "a.bin"), b"1")
    fs, path = storage.get_fs(root)
    fs.ls(path)  # this process listed the prefix earlier (s3fs keeps that listing)
    client.pipe_file(f"{path}/b.bin", b"2")  # then a Ray worker's own client wrote more
    client.pipe_file(f"{path}/d/c.bin", b"3")
    assert storage.exists(storage.join(root, "b.bin"))
    assert storage.holds_data(storage.join(root, "d"))
    assert storage.list_files(root) == [f"{root}/a.bin", f"{root}/b.bin", f"{root}/d/c.bin"]


def test_write_many_and_list_files_s3(s3_prefix):
    prefix, client = s3_prefix
    root = storage.join(prefix, "tree")
    names = ["b.jpg", "a.jpg", "sub/c.jpg", ".hidden.jpg", "_SUCCESS", "_tmp/d.jpg", "sub/_f.jpg"]
    storage.write_many({storage.join(root, n): n.encode() for n in names})
    for n in names:
        assert client.cat_file(f"{root.removeprefix('s3://')}/{n}") == n.encode()
    assert storage.list_files(root) == [f"{root}/a.jpg", f"{root}/b.jpg", f"{root}/sub/c.jpg"]


def test_arrow_fs_s3_write_and_read(s3_prefix):
    prefix, client = s3_prefix
    table = pa.table({"x": [1, 2, 3], "y": ["a", "b", None]})
    uri = storage.join(prefix, "arrow", "t.parquet")
    fs, path = storage.arrow_fs(uri)
    pq.write_table(table, path, filesystem=fs)
    with client.open(uri.removeprefix("s3://"), "rb") as f:
        assert pq.read_table(f).equals(table)
    assert pq.read_table(path, filesystem=fs).equals(table)
    # An output that received no rows: Ray Data deletes the directory it "created", which holds no objects.
    empty_fs, empty_path = storage.arrow_fs(storage.join(prefix, "arrow", "never-written"))
    empty_fs.create_dir(empty_path)
    empty_fs.delete_dir(empty_path)
    assert not client.exists(empty_path)


# The predictions table's primitives


def test_key_array_single_and_joined_columns():
    t = pa.table({"gbifID": pa.array([7, None, 123], pa.int64()), "image_uri": ["a.jpg", "b.jpg", None]})
    assert tbl.key_array(t, ["gbifID"]).to_pylist() == ["7", "", "123"]
    assert tbl.key_array(t, ["gbifID", "image_uri"]).to_pylist() == ["7\x1fa.jpg", "\x1fb.jpg", "123\x1f"]
    strings = pa.table({"gbifID": ["7"]})  # a string key compares equal to the same integer key
    assert tbl.key_array(strings, ["gbifID"]).to_pylist() == ["7"]


def test_next_seq_and_find_run():
    assert tbl.next_seq([]) == 1
    entries = [{"seq": 1, "run_id": "mon"}, {"seq": 2, "run_id": "tue"}, {"seq": 5, "run_id": "fri"}]
    assert tbl.next_seq(entries) == 6
    assert tbl.find_run(entries, "tue") == {"seq": 2, "run_id": "tue"}
    assert tbl.find_run(entries, "sun") is None


def test_create_exclusive_local(tmp_path):
    uri = str(tmp_path / "_log" / "00000000000000000001.json")
    assert tbl.create_exclusive(uri, b"first") is True
    assert tbl.create_exclusive(uri, b"second") is False
    assert (tmp_path / "_log" / "00000000000000000001.json").read_bytes() == b"first"
    assert os.listdir(tmp_path / "_log") == ["00000000000000000001.json"]  # no temporary file left


def test_create_exclusive_s3(s3_prefix):
    prefix, client = s3_prefix
    uri = storage.join(prefix, "table", "_log", "00000000000000000001.json")
    assert tbl.create_exclusive(uri, b"first") is True
    assert tbl.create_exclusive(uri, b"second") is False
    assert client.cat_file(uri.removeprefix("s3://")) == b"first"
