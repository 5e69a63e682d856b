"""Inputs as lazy Ray Datasets: manifests, image trees and Darwin Core Archives."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

import ray

from plantray.config import ConfigError
from plantray.sources.manifest import prepare_rows, read_manifest
from plantray.sources.tree import read_tree
from plantray.storage.fs import HTTP_SCHEMES, REMOTE_SCHEMES, get_fs, scheme

MANIFEST_SUFFIXES = (".parquet", ".csv")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif")


@dataclass(frozen=True)
class InputKind:
    """What an INPUT URI is: ``manifest``, ``dwca`` (Darwin Core Archive) or ``images`` (a tree)."""

    kind: str
    uri: str


def detect_input(uri: str) -> InputKind:
    """Classifies an INPUT URI, refusing what does not exist or is not supported.

    Raises:
        ConfigError: the input is missing or of an unknown kind.
    """
    proto = scheme(uri)
    if proto in HTTP_SCHEMES:
        raise ConfigError(f"--input {uri!r}: an HTTP URL cannot be listed; give a manifest (.parquet/.csv) "
                          "whose image_uri column holds the http(s) URLs")
    if proto != "file" and proto not in REMOTE_SCHEMES:
        raise ConfigError(f"--input {uri!r}: unsupported scheme {proto!r}; use a local path, s3://, gs:// ...")
    fs, path = get_fs(uri)
    if not fs.exists(path):
        raise ConfigError(f"--input {uri!r} does not exist; check the path (and AWS_ENDPOINT_URL for S3)")
    lower = uri.lower().rstrip("/")
    if lower.endswith(MANIFEST_SUFFIXES):
        return InputKind("manifest", uri)
    if lower.endswith(".zip") or (fs.isdir(path) and fs.exists(posixpath.join(path, "meta.xml"))):
        return InputKind("dwca", uri)
    if fs.isdir(path):
        return InputKind("images", uri)
    raise ConfigError(f"--input {uri!r} is a file but neither a manifest (.parquet/.csv) nor a Darwin Core "
                      "Archive (.zip); point --input at a manifest, an archive or a directory of images")


# Rows per block handed to the CPU stages. A manifest file is one block when read; split it so decoding
# runs as many parallel tasks instead of one long one (a few JPEG decodes per row is ~10 ms of work).
BLOCK_ROWS = 64


def read_input(kind: InputKind, reserved: set[str] = frozenset(), labels_from_dirs: bool = False,
               block_rows: int = BLOCK_ROWS) -> tuple[ray.data.Dataset, dict]:
    """Dispatches on the input kind; returns the dataset (in blocks of at most ``block_rows`` rows)
    and input statistics (e.g. rows skipped from an archive)."""
    stats: dict = {}
    if kind.kind == "manifest":
        ds = read_manifest(kind.uri, reserved)
    elif kind.kind == "images":
        ds = read_tree(kind.uri, labels_from_dirs)
    else:
        from plantray.sources.dwca import read_dwca

        ds, stats = read_dwca(kind.uri)
        ds = ds.map_batches(prepare_rows, fn_args=("", frozenset(reserved)), batch_format="pyarrow",
                            batch_size=None, zero_copy_batch=True)
    return ds.repartition(target_num_rows_per_block=block_rows), stats


def open_dataset(uri: str, labels_from_dirs: bool = False, reserved: set[str] = frozenset()):
    """Detects and reads a DATA/INPUT URI (train, evaluate and classify share this)."""
    return read_input(detect_input(uri), reserved, labels_from_dirs)
