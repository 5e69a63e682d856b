"""Storage: every file plantray reads or writes goes through here (local paths, s3:// and other fsspec URIs).

``from plantray import storage`` gives the filesystem helpers of :mod:`plantray.storage.fs`; HTTP fetching
(:mod:`plantray.storage.http`) and the predictions table (:mod:`plantray.storage.table`) are modules of
their own.
"""

from plantray.storage.fs import (
    HTTP_SCHEMES,
    REMOTE_SCHEMES,
    arrow_fs,
    dirname,
    exists,
    get_fs,
    holds_data,
    join,
    list_files,
    open_for_write,
    read_bytes,
    remove,
    resolve,
    scheme,
    write_bytes,
)

__all__ = ["HTTP_SCHEMES", "REMOTE_SCHEMES", "arrow_fs", "dirname", "exists", "get_fs", "holds_data", "join",
           "list_files", "open_for_write", "read_bytes", "remove", "resolve", "scheme", "write_bytes"]
