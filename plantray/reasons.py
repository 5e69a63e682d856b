"""The failure vocabulary: every reason a row's ``error`` column can hold, in one place.

A row whose image could not be classified keeps its place in the output with ``error`` set to one of
these short texts, so ``failures_by_reason`` counts each cause under one name whatever the source
(local file, object store or HTTP). README's "Failure reasons" table says what each means and what a
user does about it. Reasons built with a suffix (``http 404``, ``unsupported scheme ftp``) start with
the constant named here.
"""

from __future__ import annotations

# Reading bytes
NO_URI = "no image uri"
NOT_FOUND = "not found"
PERMISSION_DENIED = "permission denied"
UNSUPPORTED_SCHEME = "unsupported scheme"  # + " <scheme>"
MISSING_FILESYSTEM = "filesystem package not installed"  # "unsupported scheme gs (filesystem package ...)"
READ_ERROR = "read error"  # + ": <exception type>"
FILE_TOO_LARGE = "file too large"
EMPTY_FILE = "empty file"

# HTTP(S)
HTTP_STATUS = "http"  # + " <status code>"
TIMEOUT = "timeout"
CONNECTION_ERROR = "connection error"
TOO_MANY_REDIRECTS = "too many redirects"
INVALID_URL = "invalid url"
REQUEST_ERROR = "request error"  # + " (<exception type>)"

# Decoding (plantray.images.decode.open_image maps every exception Pillow raises to one of these)
NOT_AN_IMAGE = "not an image"  # no image format's signature at all: HTML, text, PDF, random bytes
UNSUPPORTED_FORMAT = "unsupported image format"  # a format or variant Pillow cannot decode (some DDS, BMP...)
IMAGE_TOO_LARGE = "image too large"  # over --max-pixels as stored or once resized, or out of memory
TRUNCATED = "truncated image"  # the data ends before the image does
UNDECODABLE = "undecodable image"  # an image signature, but corrupt contents

# plantray's own bugs (anything else should have a name above)
INTERNAL_ERROR = "internal error"  # + ": <exception type>"


def with_detail(reason: str, detail: object) -> str:
    """``reason`` followed by a detail, in the house form (``"http 404"``, ``"unsupported scheme ftp"``)."""
    return f"{reason} {detail}"
