"""Storage problems in the user's words: one line naming the location, the cause and the fix.

No credentials, an endpoint nobody answers at, access denied, a missing bucket, a local permission denied, a
full or read-only disk: each is the user's to fix, so each becomes a :class:`StorageError` (a ConfigError:
exit status 2, no traceback unless ``-v``). :func:`named` converts them where a command first touches a
location the user gave; :func:`explain` finds them behind any exception, Ray task errors included, for the
CLI to say in one line whatever stage they came from. A missing file stays ``FileNotFoundError``: callers
decide what a missing file means.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

from plantray.config import ConfigError

CREDENTIAL_ERRORS = {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",
                     "NoAuthTokenError", "DefaultCredentialsError"}
ENDPOINT_ERRORS = {"EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError",
                   "ClientConnectorError", "ServerTimeoutError"}
REJECTED_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
DENIED_CODES = {"AccessDenied", "AllAccessDisabled", "403", "Forbidden"}


class StorageError(ConfigError):
    """A storage problem the user fixes (credentials, endpoint, permissions, a missing bucket, a full disk).

    Attributes:
        where: the location (``--output 's3://b/x'`` or a URI).
        cause: what is wrong, in words.
        fix: what to do about it.
    """

    def __init__(self, where: str, cause: str, fix: str):
        super().__init__(f"{where}: {cause}; {fix}")
        self.where, self.cause, self.fix = where, cause, fix

    def __reduce__(self):  # picklable across Ray processes despite the three-argument constructor
        return type(self), (self.where, self.cause, self.fix)


def endpoint() -> str:
    """The S3-compatible endpoint in use: ``AWS_ENDPOINT_URL(_S3)``, or AWS's own."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception behind it: ``__cause__``, ``__context__`` and Ray's ``cause``."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        cause = getattr(e, "cause", None)
        todo += [cause if isinstance(cause, BaseException) else None, e.__cause__, e.__context__]


def _client_code(e: BaseException) -> str:
    response = getattr(e, "response", None)
    return str((response or {}).get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def _bucket(where: str) -> str:
    """The bucket of an object-store URI (``s3://b/k`` -> ``b``), or ``where`` itself."""
    rest = where.split("://", 1)[-1].strip("'\" ")
    return rest.split("/", 1)[0] if "://" in where else where


def _problem(e: BaseException, where: str | None) -> StorageError | None:
    """The :class:`StorageError` that ``e`` alone shows, or None."""
    name, code = type(e).__name__, _client_code(e)
    if isinstance(e, StorageError):
        return e
    if name in CREDENTIAL_ERRORS:
        return StorageError(where or "object storage", "no credentials for the object store",
                            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the environment")
    if name in ENDPOINT_ERRORS:
        return StorageError(where or endpoint(), f"cannot reach the object store at {endpoint()}",
                            "check AWS_ENDPOINT_URL and that the store is running and reachable")
    if code in REJECTED_CODES:
        return StorageError(where or "object storage", f"the object store rejected the credentials ({code})",
                            "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    if name == "NoSuchBucket" or code == "NoSuchBucket" or (
            isinstance(e, FileNotFoundError) and "bucket does not exist" in str(e)):
        bucket = _bucket(where) if where else "the bucket"
        return StorageError(where or "object storage", f"bucket {bucket!r} does not exist",
                            "create it or correct the URI")
    if code in DENIED_CODES or isinstance(e, PermissionError):
        place = where or getattr(e, "filename", None) or "the location"
        return StorageError(str(place), "permission denied", "grant this user (or these credentials) access, or "
                            "choose another location")
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError(where or str(e.filename or "the output"), "no space left on the device",
                            "free some space or write to another location")
    if isinstance(e, OSError) and e.errno == errno.EROFS:
        return StorageError(where or str(e.filename or "the output"), "the file system is read-only",
                            "write to another location")
    return None


def explain(exc: BaseException, where: str | None = None) -> StorageError | None:
    """The storage problem behind ``exc``, searched along its causes (Ray task errors included).

    Args:
        exc: any exception.
        where: how to name the location when known (``--input 's3://b/x.csv'``).
    Returns:
        The problem in words, or None when ``exc`` is no storage problem (a bug, bad data, a missing file).
    """
    for e in _chain(exc):
        problem = _problem(e, where)
        if problem is not None:
            return problem
    return None


@contextlib.contextmanager
def named(uri: str, flag: str | None = None) -> Iterator[None]:
    """Converts a storage problem raised inside the block into a :class:`StorageError` naming ``flag uri``.

    Args:
        uri: the location the block touches.
        flag: the flag that gave it (``--input``), or None to name the URI alone.
    """
    try:
        yield
    except StorageError:
        raise
    except Exception as e:
        problem = explain(e, f"{flag} {uri!r}" if flag else uri)
        if problem is None:
            raise
        raise problem from e
