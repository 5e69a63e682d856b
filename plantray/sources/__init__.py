"""Inputs: manifests, image trees and Darwin Core Archives, one :class:`Source` class each.

``open_source(uri)`` is the one place that decides what an input is. Its result answers ``columns()``,
``check()`` and ``label_counts()`` on the driver without Ray (so a bad input is refused before Ray
starts), and ``dataset()`` gives the rows as a lazy Ray Dataset.
"""

from __future__ import annotations

from plantray import storage
from plantray.config import ConfigError
from plantray.sources.base import BLOCK_ROWS, IMAGE_SUFFIXES, Source, describe
from plantray.sources.dwca import DarwinCoreArchive
from plantray.sources.dwcameta import ARCHIVE_SUFFIXES, packing
from plantray.sources.manifest import MANIFEST_FORMATS, Manifest, manifest_format
from plantray.sources.tree import ImageTree

__all__ = ["BLOCK_ROWS", "IMAGE_SUFFIXES", "DarwinCoreArchive", "ImageTree", "Manifest", "Source", "open_source"]


def open_source(uri: str, flag: str = "--input") -> Source:
    """The input at ``uri``: a manifest (``.parquet``/``.csv``), a Darwin Core Archive (``.zip``, ``.tar.gz``,
    ``.tgz`` or a directory holding ``meta.xml``) or a tree of images (any other directory/prefix).

    Args:
        uri: local path or object-store URI.
        flag: the flag that gave it, named in error messages: ``--input``, ``--data``, ``--val``, or
            ``--test NAME=`` (written right before the URI).
    Returns:
        The source; call its ``check()`` before starting Ray.
    Raises:
        ConfigError: an HTTP URL, an unsupported scheme, a missing input, or a file of no known kind.
    """
    where = describe(uri, flag)
    proto = storage.scheme(uri)
    if proto in storage.HTTP_SCHEMES:
        raise ConfigError(f"{where}: an HTTP URL cannot be listed; give a manifest (.parquet/.csv) whose image_uri "
                          "column holds the http(s) URLs")
    if proto != "file" and proto not in storage.REMOTE_SCHEMES:
        raise ConfigError(f"{where}: unsupported scheme {proto!r}; use a local path, s3://, gs:// ...")
    with storage.named(uri, flag.rstrip("=")):  # no credentials, no endpoint, access denied: one line
        fs, path = storage.get_fs(uri)
        if not fs.exists(path):
            reason = storage.missing_reason(uri)
            raise ConfigError(f"{where}: {reason}; create it or correct the URI" if reason.startswith("bucket")
                              else f"{where} does not exist; check the path (and AWS_ENDPOINT_URL for S3)")
        is_dir = fs.isdir(path)
        has_meta = is_dir and fs.exists(f"{path.rstrip('/')}/meta.xml")
    if manifest_format(uri):
        return Manifest(uri, flag)
    if packing(uri) != "dir" or has_meta:
        return DarwinCoreArchive(uri, flag)
    if is_dir:
        return ImageTree(uri, flag)
    raise ConfigError(f"{where} is a file but neither a manifest ({', '.join(MANIFEST_FORMATS)}) nor a Darwin Core "
                      f"Archive ({', '.join(ARCHIVE_SUFFIXES)}); point {flag.rstrip('=')} at a manifest, an archive "
                      "or a directory of images")
