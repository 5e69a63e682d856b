"""URIs, filesystems and inputs: local paths, s3://, gs://, http(s):// and manifests.

Every path a user gives is a URI that fsspec understands. S3-compatible stores (MinIO, Ceph, the
tests' moto server) are reached through the standard ``AWS_ENDPOINT_URL`` and credentials variables.
"""

from __future__ import annotations

import functools
import os
import posixpath
from urllib.parse import urlparse

import fsspec
import pyarrow.fs as pafs

from plantray.config import ConfigError

REMOTE_SCHEMES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"}
HTTP_SCHEMES = {"http", "https"}


def scheme(uri: str) -> str:
    """The URI scheme, ``"file"`` for plain paths."""
    parsed = urlparse(uri)
    return parsed.scheme.lower() if len(parsed.scheme) > 1 else "file"


def _storage_options(proto: str) -> dict:
    """Explicit endpoint for s3fs, so S3-compatible stores work whatever the botocore version."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if proto in ("s3", "s3a") and endpoint:
        return {"client_kwargs": {"endpoint_url": endpoint}}
    return {}


@functools.lru_cache(maxsize=16)
def _cached_fs(proto: str) -> fsspec.AbstractFileSystem:
    try:
        return fsspec.filesystem(proto, **_storage_options(proto))
    except ImportError as e:
        # e.g. gs:// needs gcsfs, az:// needs adlfs: say which package, not a traceback.
        raise ConfigError(f"{proto}:// needs an extra package ({e}); pip install it into the environment") from None


def get_fs(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """Returns the (cached) fsspec filesystem for ``uri`` and the path within it."""
    proto = scheme(uri)
    if proto == "file":
        return _cached_fs("file"), os.path.abspath(uri.removeprefix("file://"))
    fs = _cached_fs(proto)
    return fs, fs._strip_protocol(uri)


def arrow_fs(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem (for Ray Data readers/writers) and path for ``uri``."""
    fs, path = get_fs(uri)
    if scheme(uri) == "file":
        return pafs.LocalFileSystem(), path
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def join(base: str, *parts: str) -> str:
    """Joins URI parts with ``/`` whatever the scheme."""
    if scheme(base) == "file":
        return os.path.join(base, *parts)
    return posixpath.join(base, *parts)


def dirname(uri: str) -> str:
    """The parent of ``uri``, keeping its scheme."""
    if scheme(uri) == "file":
        return os.path.dirname(os.path.abspath(uri))
    return uri.rstrip("/").rsplit("/", 1)[0]


def resolve(uri: str, base: str) -> str:
    """Resolves a manifest's ``image_uri`` against the manifest's own directory.

    Absolute URIs (with a scheme, or an absolute local path) are returned unchanged, so a dataset
    with relative URIs can be moved to a bucket as a unit.
    """
    if not uri or "://" in uri or uri.startswith("/"):
        return uri
    return join(base, uri)


def exists(uri: str) -> bool:
    """Whether ``uri`` exists (file or directory/prefix)."""
    fs, path = get_fs(uri)
    return fs.exists(path)


def holds_data(uri: str) -> bool:
    """Whether ``uri`` is an existing file or a non-empty directory/prefix."""
    fs, path = get_fs(uri)
    if not fs.exists(path):
        return False
    return not fs.isdir(path) or len(fs.ls(path)) > 0


def read_bytes(uri: str, max_bytes: int | None = None) -> bytes:
    """Reads an object whole (labels, model cards, weights). Raises FileNotFoundError."""
    fs, path = get_fs(uri)
    with fs.open(path, "rb") as f:
        return f.read() if max_bytes is None else f.read(max_bytes + 1)


def write_bytes(uri: str, data: bytes) -> None:
    """Writes an object whole, creating parent directories for local paths."""
    with open_for_write(uri) as f:
        f.write(data)


def open_for_write(uri: str):
    """A binary file object writing ``uri`` (parent directories created for local paths); use as a context."""
    fs, path = get_fs(uri)
    if scheme(uri) == "file":
        os.makedirs(os.path.dirname(path), exist_ok=True)
    return fs.open(path, "wb")


def remove(uri: str) -> None:
    """Deletes a file or directory tree if present."""
    fs, path = get_fs(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def list_files(uri: str) -> list[str]:
    """Lists every file under a directory/prefix (skipping hidden and ``_``-prefixed names), sorted.

    Only used for directory inputs; a manifest is never listed.
    """
    fs, path = get_fs(uri)
    proto = scheme(uri)
    out = []
    for p in sorted(fs.find(path)):
        rel = p[len(path.rstrip("/")) + 1:]
        if any(part.startswith((".", "_")) for part in rel.split("/")):
            continue
        out.append(p if proto == "file" else f"{proto}://{p}")
    return out
