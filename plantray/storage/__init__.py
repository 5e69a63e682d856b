"""Storage: every file plantray reads or writes goes through here (local paths, s3:// and other fsspec URIs).

``from plantray import storage`` gives the filesystem helpers of :mod:`plantray.storage.fs`; HTTP fetching
(:mod:`plantray.storage.http`) and the predictions table (:mod:`plantray.storage.table`) are modules of
their own.
"""

from plantray.storage.errors import StorageError, explain, named
from plantray.storage.fs import (
    DEFAULT_MAX_BYTES,
    HTTP_SCHEMES,
    REMOTE_SCHEMES,
    MissingFilesystem,
    absolute,
    absolute_uri,
    arrow_fs,
    check_scheme,
    check_writable,
    dirname,
    exists,
    get_fs,
    holds_data,
    join,
    list_files,
    makedirs,
    missing_reason,
    move,
    open_for_write,
    read_bytes,
    remove,
    resolve,
    scheme,
    write_bytes,
    write_many,
)

__all__ = ["DEFAULT_MAX_BYTES", "HTTP_SCHEMES", "REMOTE_SCHEMES", "MissingFilesystem", "StorageError", "absolute",
           "absolute_uri",
           "arrow_fs",
           "check_scheme", "check_writable", "dirname", "exists", "explain", "get_fs", "holds_data", "join",
           "list_files", "makedirs", "missing_reason", "move", "named", "open_for_write", "read_bytes", "remove",
           "resolve", "scheme", "write_bytes", "write_many"]
