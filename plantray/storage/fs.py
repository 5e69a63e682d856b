"""URIs and filesystems: local paths, s3://, gs:// and every other fsspec URI, through one door.

Every path a user gives is a URI that fsspec understands. S3-compatible stores (MinIO, Ceph, the
tests' moto server) are reached through the standard ``AWS_ENDPOINT_URL`` and credentials variables,
which only the filesystems made here honour: the rest of plantray reads and writes through these
functions, never through fsspec or ``pyarrow.fs`` directly.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import pathlib
import posixpath
import uuid
from urllib.parse import urlparse

import fsspec
import pyarrow.fs as pafs

from plantray.config import DEFAULT_MAX_BYTES  # noqa: F401 (storage.DEFAULT_MAX_BYTES: one cap for every read)
from plantray.storage.errors import StorageError, named

REMOTE_SCHEMES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"}
HTTP_SCHEMES = {"http", "https"}
# The pip package behind each object-store scheme (fsspec names only the module that failed to import).
_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs",
             "abfss": "adlfs"}


class MissingFilesystem(ValueError):
    """The fsspec filesystem of a URI's scheme is not installed (``gs://`` without gcsfs, ...).

    Attributes:
        scheme: the URI scheme.
        package: the package to install.
    """

    def __init__(self, scheme: str, package: str):
        super().__init__(f"{scheme}:// needs the {package} package, which is not installed: "
                         f"pip install {package}")
        self.scheme = scheme
        self.package = package

    def __reduce__(self):  # picklable across Ray processes despite the two-argument constructor
        return type(self), (self.scheme, self.package)


def scheme(uri: str) -> str:
    """The URI scheme, ``"file"`` for plain paths."""
    parsed = urlparse(uri)
    return parsed.scheme.lower() if len(parsed.scheme) > 1 else "file"


def _filesystem(proto: str) -> fsspec.AbstractFileSystem:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    # Keyed by the endpoint too, so a process that changes AWS_ENDPOINT_URL does not keep the old client.
    return _cached_fs(proto, endpoint if proto in ("s3", "s3a") else None)


@functools.lru_cache(maxsize=16)
def _cached_fs(proto: str, endpoint: str | None) -> fsspec.AbstractFileSystem:
    # An explicit endpoint for s3fs, so S3-compatible stores work whatever the botocore version.
    options = {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}
    try:
        return fsspec.filesystem(proto, **options)
    except ImportError as e:
        # e.g. gs:// needs gcsfs, az:// needs adlfs: say which package, not a traceback.
        module = getattr(e.__cause__, "name", None) or getattr(e, "name", None) or proto
        raise MissingFilesystem(proto, _PACKAGES.get(proto, module.split(".")[0])) from None


def check_scheme(uri: str) -> None:
    """Checks that ``uri``'s filesystem can be made, so a command can refuse a URI before any work.

    Args:
        uri: any URI or local path.
    Raises:
        MissingFilesystem: the scheme's fsspec package is not installed.
        ValueError: fsspec knows no filesystem for the scheme.
    """
    _filesystem(scheme(uri))


def get_fs(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The (cached) fsspec filesystem for ``uri`` and the path within it.

    Raises:
        MissingFilesystem: the scheme's fsspec package is not installed.
    """
    proto = scheme(uri)
    if proto == "file":
        return _filesystem("file"), os.path.abspath(uri.removeprefix("file://"))
    fs = _filesystem(proto)
    return fs, fs._strip_protocol(uri)


def _fresh_fs(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """:func:`get_fs`, forgetting cached listings: other processes (Ray workers) may have written since."""
    fs, path = get_fs(uri)
    fs.invalidate_cache(path)
    return fs, path


class _ObjectStoreHandler(pafs.FSSpecHandler):
    """pyarrow's fsspec bridge, where deleting a directory that holds no objects succeeds.

    Object stores have no empty directories: ``create_dir`` makes nothing, so Ray Data's clean-up of an
    output that received no rows (``delete_dir``) would otherwise fail with FileNotFoundError.
    """

    def delete_dir(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            super().delete_dir(path)


def arrow_fs(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem (for Ray Data readers/writers and pyarrow) and the path for ``uri``."""
    fs, path = get_fs(uri)
    if scheme(uri) == "file":
        return pafs.LocalFileSystem(), path
    return pafs.PyFileSystem(_ObjectStoreHandler(fs)), path


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


def absolute(uri: str | None) -> str | None:
    """``uri`` with a local path made absolute (no scheme added), for Ray workers, whose working directory
    is not the command's (a cluster's, or one a local Ray was started in). URIs with a scheme are kept."""
    if not uri or scheme(uri) != "file":
        return uri
    return os.path.abspath(uri.removeprefix("file://"))


def absolute_uri(uri: str | None) -> str | None:
    """``uri`` as an absolute URI a reader anywhere can open: local paths become ``file://`` URIs
    (percent-encoded), URIs with a scheme are kept. None stays None.
    """
    if not uri:
        return uri
    if scheme(uri) != "file" or uri.startswith("file://"):
        return uri
    return pathlib.Path(os.path.abspath(uri)).as_uri()


def exists(uri: str) -> bool:
    """Whether ``uri`` exists (file or directory/prefix)."""
    fs, path = _fresh_fs(uri)
    return fs.exists(path)


def holds_data(uri: str) -> bool:
    """Whether ``uri`` is an existing file or a non-empty directory/prefix."""
    fs, path = _fresh_fs(uri)
    if not fs.exists(path):
        return False
    return not fs.isdir(path) or len(fs.ls(path)) > 0


def read_bytes(uri: str, max_bytes: int | None = None) -> bytes:
    """Reads an object whole (labels, model cards, weights, cached images).

    Args:
        uri: the object.
        max_bytes: read at most this many bytes plus one, so a caller can tell "larger than the cap".
    Returns:
        The bytes.
    Raises:
        FileNotFoundError: nothing is there.
    """
    fs, path = get_fs(uri)
    with fs.open(path, "rb") as f:
        return f.read() if max_bytes is None else f.read(max_bytes + 1)


def write_bytes(uri: str, data: bytes) -> None:
    """Writes an object whole; a reader sees the old object or the new one, never a partial one.

    Local paths get their parent directories and are written to a hidden temporary file renamed into
    place; object stores publish one PUT whole or not at all.
    """
    if scheme(uri) != "file":
        fs, path = get_fs(uri)
        fs.pipe_file(path, data)
        return
    with open_for_write(uri) as f:
        f.write(data)


def write_many(files: dict[str, bytes]) -> None:
    """Writes several objects of one filesystem; object stores upload them concurrently.

    Args:
        files: URI -> bytes, every URI with the same scheme.
    """
    schemes = {scheme(u) for u in files}
    if len(schemes) > 1:
        raise ValueError(f"write_many needs URIs of one filesystem, got schemes {sorted(schemes)}")
    if schemes == {"file"}:
        for uri, data in files.items():
            write_bytes(uri, data)
    elif files:
        fs = get_fs(next(iter(files)))[0]
        fs.pipe({get_fs(u)[1]: data for u, data in files.items()})


def makedirs(uri: str) -> None:
    """Creates a directory and its parents if missing (object-store prefixes need none; buckets are made)."""
    fs, path = get_fs(uri)
    fs.makedirs(path, exist_ok=True)


@contextlib.contextmanager
def open_for_write(uri: str):
    """A binary file object writing ``uri``, published only when the block ends without an exception.

    For streams too large to hold (a Darwin Core Archive); small objects go through :func:`write_bytes`.
    Locally the data goes to a hidden temporary file renamed into place at the end (parents created); an
    object store's multipart upload is completed at the end or aborted. A failure mid-way (a full disk, a
    lost connection) therefore never leaves a partial file that looks complete.
    """
    fs, path = get_fs(uri)
    if scheme(uri) != "file":
        f = fs.open(path, "wb")
        try:
            yield f
        except BaseException:
            getattr(f, "discard", f.close)()  # fsspec's buffered files: abort the upload
            raise
        f.close()
        return
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    # Hidden (list_files skips it) and created like any file (mkstemp's 0600 would hide models from others).
    tmp = os.path.join(parent, f".{name}.tmp-{uuid.uuid4().hex}")
    try:
        with open(tmp, "xb") as f:
            yield f
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def check_writable(uri: str, flag: str) -> None:
    """Refuses an output location that cannot be written, before any work is done there.

    Object stores: the store answers with these credentials and the bucket exists. Local paths: the nearest
    existing parent is a directory this process may write (a read-only file system counts as not).

    Args:
        uri: the output location.
        flag: the flag that gave it, for the message.
    Raises:
        StorageError: naming ``flag uri``, the cause and the fix.
    """
    where = f"{flag} {uri!r}"
    with named(uri, flag):
        if scheme(uri) != "file":
            fs, path = get_fs(uri)
            bucket = path.split("/", 1)[0]
            fs.exists(path)  # raises for missing credentials or endpoint (a bucket-level exists swallows them)
            if not fs.exists(bucket):
                raise StorageError(where, f"bucket {bucket!r} does not exist", "create it or correct the URI")
            return
        target = os.path.abspath(uri.removeprefix("file://"))
        parent = os.path.dirname(target) if os.path.isfile(target) else target  # a file is replaced: its dir
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            raise StorageError(where, f"{parent} is a file, not a directory", "choose a directory path")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "permission denied", parent)


def missing_reason(uri: str) -> str:
    """Why nothing is at ``uri``, for a message: the bucket is missing, or the path itself."""
    if scheme(uri) != "file":
        fs, path = get_fs(uri)
        bucket = path.split("/", 1)[0]
        if not fs.exists(bucket):
            return f"bucket {bucket!r} does not exist"
    return "does not exist"


def remove(uri: str) -> None:
    """Deletes a file or directory tree if present."""
    fs, path = _fresh_fs(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def list_files(uri: str) -> list[str]:
    """Lists every file under a directory/prefix (skipping hidden and ``_``-prefixed names), sorted.

    Only used for directory inputs; a manifest is never listed.
    """
    fs, path = _fresh_fs(uri)
    proto = scheme(uri)
    out = []
    for p in sorted(fs.find(path)):
        rel = p[len(path.rstrip("/")) + 1:]
        if any(part.startswith((".", "_")) for part in rel.split("/")):
            continue
        out.append(p if proto == "file" else f"{proto}://{p}")
    return out


def move(src: str, dst: str) -> None:
    """Moves one file ``src`` to ``dst`` (same filesystem), replacing ``dst``.

    Atomic where the filesystem has a rename: on local paths (``os.replace``, same mount) a reader sees
    ``dst`` absent or whole, and ``src`` and ``dst`` never both. Object stores have no rename: s3, gs and
    az copy then delete, so ``dst`` appears whole (one object PUT/COPY is all or nothing) but ``src``
    lingers until the delete; callers that publish several files mark them done with a separate object
    written last (see :mod:`plantray.inference.outputs`).

    Raises:
        FileNotFoundError: ``src`` does not exist.
    """
    fs, src_path = get_fs(src)
    dst_path = get_fs(dst)[1]
    if scheme(src) == "file":
        os.makedirs(os.path.dirname(dst_path), exist_ok=True)
        os.replace(src_path, dst_path)
        return
    fs.mv(src_path, dst_path)
    fs.invalidate_cache(src_path)
