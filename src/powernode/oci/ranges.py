"""Ranged blob reads over HTTP (RFC 9110 §14: ``Range: bytes=first-last`` → 206).

The OCI distribution spec lets registries honour ``Range`` on
``GET /v2/<name>/blobs/<digest>``; distribution 2.x does (it serves blobs
with Go's ``http.ServeContent``). A part of a blob cannot be checked against
the blob's digest, so callers verify what they read by other means (the
module pull checks each object against its fs-verity name).

Robustness: the answer must be 206 with a ``Content-Range`` naming exactly
the bytes asked for; more bytes than asked is an error, fewer is a cut-off
body, which is re-requested from where it stopped (``attempts`` times, with
backoff). A 200 raises :class:`RangeNotSupportedError` before any byte is
read, so the caller can fetch the whole blob instead.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx

from powernode.errors import DataError, TransportError, VerificationError
from powernode.oci.digest import Digest
from powernode.oci.errors import NotFoundError, RangeNotSupportedError

if TYPE_CHECKING:
    from powernode.oci.distribution import DistributionRegistry

log = logging.getLogger(__name__)

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def check_range(offset: int, length: int) -> None:
    if offset < 0 or length <= 0:
        raise DataError(f"invalid blob range: offset {offset}, length {length}")


def read_range(
    reg: DistributionRegistry, repository: str, digest: Digest, offset: int, length: int
) -> Iterator[bytes]:
    """Yield the bytes ``[offset, offset + length)`` of a blob, in chunks."""
    check_range(offset, length)
    url = reg.blob_url(repository, digest)
    done = 0
    failures = 0
    attempts = reg.limits.attempts
    while done < length:
        first, last = offset + done, offset + length - 1
        resp = reg.request(
            "GET",
            url,
            key=f"{repository}:pull",
            stream=True,
            headers={"Range": f"bytes={first}-{last}"},
        )
        try:
            _check_answer(reg, url, resp, digest, first=first, last=last)
            try:
                for chunk in resp.iter_bytes(reg.limits.read_chunk):
                    if done + len(chunk) > length:
                        raise VerificationError(
                            f"GET {url} (bytes {first}-{last}): more data than asked for"
                        )
                    done += len(chunk)
                    yield chunk
            except (httpx.TimeoutException, httpx.TransportError, httpx.StreamError) as e:
                failures += 1
                what = "stalled" if isinstance(e, httpx.TimeoutException) else "was cut off"
                message = f"GET {url} (bytes {first}-{last}): the body {what} ({type(e).__name__})"
                if failures >= attempts:
                    raise TransportError(f"{message} after {failures} attempt(s)") from e
                log.warning("%s; retrying from byte %d", message, offset + done)
                reg.sleep(reg.limits.backoff * 2 ** (failures - 1))
                continue
            if done < length:
                failures += 1
                if failures >= attempts:
                    raise TransportError(
                        f"GET {url}: range ended at byte {offset + done} of {offset + length} "
                        f"after {failures} attempt(s); the registry serves a truncated blob"
                    )
        finally:
            resp.close()


def _check_answer(
    reg: DistributionRegistry,
    url: httpx.URL,
    resp: httpx.Response,
    digest: Digest,
    *,
    first: int,
    last: int,
) -> None:
    if resp.status_code == 200:
        raise RangeNotSupportedError(
            f"GET {url}: the registry ignored the Range header (HTTP 200); fetch the whole blob"
        )
    if resp.status_code == 404:
        raise NotFoundError(f"GET {url}: no blob {digest}")
    if resp.status_code == 416:
        raise DataError(f"GET {url}: bytes {first}-{last} lie outside blob {digest} (HTTP 416)")
    if resp.status_code != 206:
        raise reg.unexpected("GET", url, resp)
    header = resp.headers.get("Content-Range", "")
    m = _CONTENT_RANGE.fullmatch(header.strip())
    if m is None or (int(m.group(1)), int(m.group(2))) != (first, last):
        raise TransportError(
            f"GET {url}: asked for bytes {first}-{last}, the registry sent Content-Range {header!r}"
        )
