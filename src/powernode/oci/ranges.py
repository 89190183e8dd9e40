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

Two ways to read:

* :func:`read_range` yields ``bytes`` through the registry's httpx client
  (auth challenges, redirects, retries of 429/5xx);
* :func:`read_range_into` hands a reused buffer to a callback. Its bodies
  come over plain keep-alive ``http.client`` connections read with
  ``readinto`` (one copy, kernel to buffer); measured here on 256 MiB of
  packs from a local distribution: 0.42 s against 2.1 s for httpx's
  ``iter_bytes`` (h11 and its chunker copy every byte three more times,
  holding the GIL). Any answer but 206 (401 challenge, redirect, 5xx, 200)
  is handed to :func:`read_range`, so that path keeps every rule above.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import re
import ssl
import threading
import urllib.request
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import httpx

from powernode.errors import DataError, TransportError, VerificationError
from powernode.oci.digest import Digest
from powernode.oci.errors import NotFoundError, RangeNotSupportedError

if TYPE_CHECKING:
    from powernode.oci.distribution import ClientLimits, DistributionRegistry

log = logging.getLogger(__name__)

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
MAX_IDLE = 8  # idle keep-alive connections kept per registry (one per fetch worker)

Sink = Callable[[memoryview], None]


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
                message = _broken(url, first, last, e)
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


def _broken(url: httpx.URL, first: int, last: int, e: BaseException) -> str:
    stalled = isinstance(e, httpx.TimeoutException | TimeoutError)
    what = "stalled" if stalled else "was cut off"
    return f"GET {url} (bytes {first}-{last}): the body {what} ({type(e).__name__})"


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
    _check_content_range(url, resp.headers.get("Content-Range", ""), first, last)


def _check_content_range(url: httpx.URL, header: str, first: int, last: int) -> None:
    m = _CONTENT_RANGE.fullmatch(header.strip())
    if m is None or (int(m.group(1)), int(m.group(2))) != (first, last):
        raise TransportError(
            f"GET {url}: asked for bytes {first}-{last}, the registry sent Content-Range {header!r}"
        )


class RawConnections:
    """Idle keep-alive ``http.client`` connections to one registry origin.

    Used only for the bodies of ranged reads, and not at all (:attr:`usable`
    false: everything goes through httpx) when a transport was injected or
    a proxy applies, since only httpx knows about those.
    """

    def __init__(
        self, base: httpx.URL, verify: bool | str, limits: ClientLimits, *, enabled: bool = True
    ) -> None:
        self._base = base
        self._https = base.scheme == "https"
        self._verify = verify
        self._ssl: ssl.SSLContext | None = None  # built on first use: loading CAs takes 70 ms
        self._connect_timeout = limits.connect_timeout
        self._read_timeout = limits.read_timeout
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._closed = False
        self.usable = enabled and _no_proxy(base)

    def acquire(self) -> tuple[http.client.HTTPConnection, bool]:
        """A connection and whether it was used before (so may have gone stale)."""
        with self._lock:
            if self._idle:
                conn = self._idle.pop()
                # closed after a "Connection: close" answer: reconnects, cannot be stale
                return conn, conn.sock is not None
        port = self._base.port
        if self._https:
            with self._lock:
                if self._ssl is None:
                    self._ssl = httpx.create_ssl_context(verify=self._verify)
            conn = http.client.HTTPSConnection(
                self._base.host, port, timeout=self._connect_timeout, context=self._ssl
            )
        else:
            conn = http.client.HTTPConnection(self._base.host, port, timeout=self._connect_timeout)
        return conn, False

    def connected(self, conn: http.client.HTTPConnection) -> None:
        """After the connect: every later socket read may take ``read_timeout``."""
        if conn.sock is not None:
            conn.sock.settimeout(self._read_timeout)

    def release(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < MAX_IDLE:
                self._idle.append(conn)
                return
        conn.close()

    def idle(self) -> int:
        """How many connections wait for reuse."""
        with self._lock:
            return len(self._idle)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _no_proxy(base: httpx.URL) -> bool:
    """Whether httpx would connect straight to ``base`` (no proxy from the environment)."""
    proxies = urllib.request.getproxies()
    if base.scheme in proxies or "all" in proxies:
        return bool(urllib.request.proxy_bypass(base.host))
    return True


class _NetError(Exception):
    """The connection failed while sending or receiving (never the sink's own error)."""

    def __init__(self, cause: BaseException, *, before_response: bool, count: int = 0) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.before_response = before_response
        self.count = count  # bytes already passed to the sink


class _NotRange(Exception):
    """Not a 206: the httpx path handles this answer (auth, redirects, errors)."""


def read_range_into(
    reg: DistributionRegistry,
    repository: str,
    digest: Digest,
    offset: int,
    length: int,
    *,
    sink: Sink,
) -> None:
    """Pass the bytes ``[offset, offset + length)`` of a blob to ``sink`` in order.

    Each memoryview is valid only during the call (the buffer is reused).
    Same errors and retries as :func:`read_range`; a body that breaks off
    is re-requested from where it stopped.
    """
    check_range(offset, length)
    pool = reg.raw
    done = 0
    if pool.usable:
        url = reg.blob_url(repository, digest)
        buf = memoryview(bytearray(reg.limits.read_chunk))
        failures = 0
        stale_retries = 0
        while done < length and failures < reg.limits.attempts:
            first, last = offset + done, offset + length - 1
            conn, reused = pool.acquire()
            try:
                done += _get(
                    conn,
                    reg=reg,
                    pool=pool,
                    url=url,
                    repository=repository,
                    span=(first, last),
                    buf=buf,
                    sink=sink,
                )
            except _NetError as e:
                conn.close()
                done += e.count
                if reused and e.before_response and stale_retries < MAX_IDLE:
                    stale_retries += 1  # the server closed an idle connection: not a failure
                    continue
                failures += 1
                if e.before_response:
                    message = f"GET {url} (bytes {first}-{last}): connection failed ({e.cause!r})"
                else:
                    message = _broken(url, first, last, e.cause)
                if failures >= reg.limits.attempts:
                    raise TransportError(f"{message} after {failures} attempt(s)") from e.cause
                log.warning("%s; retrying from byte %d", message, offset + done)
                reg.sleep(reg.limits.backoff * 2 ** (failures - 1))
            except _NotRange:
                conn.close()
                break
            except BaseException:
                conn.close()
                raise
            else:
                pool.release(conn)
        if done >= length:
            return
    for chunk in read_range(reg, repository, digest, offset + done, length - done):
        sink(memoryview(chunk))


def _get(
    conn: http.client.HTTPConnection,
    *,
    reg: DistributionRegistry,
    pool: RawConnections,
    url: httpx.URL,
    repository: str,
    span: tuple[int, int],
    buf: memoryview,
    sink: Sink,
) -> int:
    """One GET on ``conn``; returns the bytes passed to ``sink``.

    Raises _NetError (with the count passed so far) on a broken connection,
    _NotRange for any answer but a 206.
    """
    first, last = span
    headers = {
        **reg.auth_headers(url, f"{repository}:pull"),
        "Range": f"bytes={first}-{last}",
        "Accept-Encoding": "identity",
    }
    try:
        fresh = conn.sock is None
        conn.request("GET", url.raw_path.decode("ascii"), headers=headers)
        if fresh:
            pool.connected(conn)
        resp = conn.getresponse()
    except (OSError, http.client.HTTPException) as e:
        raise _NetError(e, before_response=True) from e
    try:
        return _body(resp, url, (first, last), buf, sink)
    finally:
        # with "Connection: close" the response owns the socket; always let it go
        resp.close()


def _body(
    resp: http.client.HTTPResponse,
    url: httpx.URL,
    span: tuple[int, int],
    buf: memoryview,
    sink: Sink,
) -> int:
    first, last = span
    if resp.status != 206:
        raise _NotRange
    _check_content_range(url, resp.getheader("Content-Range", ""), first, last)
    want = last - first + 1
    if resp.length is not None and resp.length != want:
        raise VerificationError(
            f"GET {url} (bytes {first}-{last}): Content-Length {resp.length}, not {want}"
        )
    got = 0
    while got < want:
        try:
            n = resp.readinto(buf[: min(len(buf), want - got)])
        except (OSError, http.client.HTTPException) as e:
            raise _NetError(e, before_response=False, count=got) from e
        if not n:
            cut = http.client.IncompleteRead(b"", want - got)
            raise _NetError(cut, before_response=False, count=got)
        sink(buf[:n])
        got += n
    if resp.length is None:  # chunked or close-delimited: nothing may follow
        with contextlib.suppress(OSError, http.client.HTTPException):
            if resp.read(1):
                raise VerificationError(
                    f"GET {url} (bytes {first}-{last}): more data than asked for"
                )
    return got
