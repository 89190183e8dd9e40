"""One blob upload to a distribution registry: mount, monolithic or chunked.

OCI distribution spec v1.1, "Pushing blobs": ``POST /v2/<name>/blobs/uploads/``
answers ``202`` and a ``Location`` (or ``201`` when ``?mount=<digest>&from=<repo>``
succeeded). Small blobs go in one ``PUT <location>?digest=``; larger ones as
``PATCH <location>`` chunks with ``Content-Range: <start>-<end>`` (inclusive),
each answered by a new ``Location`` and ``Range: 0-<end>``, then an empty
``PUT <location>?digest=``. ``GET <location>`` reports the session's ``Range``;
a client resumes from its end. ``416`` means the offsets disagree.

Only the latest ``Location`` is valid on distribution 2.x (it carries a signed
``_state``), so :class:`UploadInterruptedError` hands that one back.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from typing import TYPE_CHECKING

import httpx

from powernode.errors import DataError, DigestMismatchError, TransportError
from powernode.oci.cache import Readable
from powernode.oci.digest import Digest
from powernode.oci.errors import UploadInterruptedError, error_detail

if TYPE_CHECKING:
    from powernode.oci.distribution import DistributionRegistry

log = logging.getLogger(__name__)

_RANGE_RE = re.compile(r"(?:bytes=)?0-(\d+)")


class _Resync(Exception):
    """The registry disagrees about the offset or lost the session."""


class ChunkedUpload:
    """State of one push: session ``location``, bytes the registry holds, local hash."""

    def __init__(self, reg: DistributionRegistry, repository: str, digest: Digest, size: int):
        self.reg = reg
        self.repository = repository
        self.digest = digest
        self.size = size
        self.key = f"{repository}:pull,push"
        self.location: httpx.URL | None = None
        self.offset = 0  # bytes the registry acknowledged
        self._pos = 0  # source position
        self._hash = hashlib.sha256()
        self._hashed = 0  # the hash covers source bytes [0, _hashed)

    # -- source ----------------------------------------------------------------

    def _read(self, f: Readable, n: int) -> bytes:
        data = f.read(n)
        if len(data) != n:
            raise DataError(
                f"blob {self.digest}: the source ended at byte {self._pos + len(data)} "
                f"of the declared {self.size}"
            )
        if self._pos + n > self._hashed:
            self._hash.update(data[self._hashed - self._pos :])
            self._hashed = self._pos + n
        self._pos += n
        return data

    def _seek(self, f: Readable, offset: int) -> None:
        """Position the source at ``offset``, hashing any bytes not hashed yet."""
        if offset == self._pos:
            return
        seek = getattr(f, "seek", None)
        if seek is None or not getattr(f, "seekable", lambda: False)():
            raise DataError(
                f"blob {self.digest}: cannot resume at byte {offset}: the source is not seekable"
            )
        start = min(offset, self._hashed)
        seek(start)
        self._pos = start
        chunk = self.reg.limits.chunk_size
        while self._pos < offset:
            self._read(f, min(chunk, offset - self._pos))

    # -- session ---------------------------------------------------------------

    def _start(self, mount_from: str | None) -> bool:
        """Open a session; True when the registry mounted the blob instead."""
        url = self.reg.url(f"/v2/{self.repository}/blobs/uploads/")
        if mount_from:
            url = url.copy_merge_params({"mount": str(self.digest), "from": mount_from})
        resp = self.reg.request("POST", url, key=self.key)
        resp.close()
        if resp.status_code == 201:
            log.info("mounted %s into %s from %s", self.digest, self.repository, mount_from)
            return True
        if resp.status_code != 202 or "Location" not in resp.headers:
            raise self.reg.unexpected("POST", url, resp)
        self._moved(resp)
        self.offset = 0
        return False

    def _moved(self, resp: httpx.Response) -> None:
        if "Location" in resp.headers:
            self.location = self.reg.base_url.join(resp.headers["Location"])

    def _sync(self, f: Readable) -> None:
        """Ask the registry how far the session got; start over if it is gone."""
        assert self.location is not None
        resp = self.reg.request("GET", self.location, key=self.key)
        resp.close()
        if resp.status_code == 404:
            log.warning("upload session for %s is gone; starting over", self.digest)
            self._start(None)
        elif resp.status_code == 204:
            self._moved(resp)
            m = _RANGE_RE.fullmatch(resp.headers.get("Range", "0-0"))
            end = int(m.group(1)) if m else 0
            # distribution reports an empty session as "0-0" too; chunks are never 1 byte.
            self.offset = end + 1 if end > 0 else 0
        else:
            raise self.reg.unexpected("GET", self.location, resp)
        if self.offset > self.size:
            raise DataError(
                f"upload of {self.digest}: registry holds {self.offset} bytes, "
                f"more than the blob's {self.size}"
            )
        log.info("upload of %s resumes at byte %d", self.digest, self.offset)
        self._seek(f, self.offset)

    def _patch(self, chunk: bytes) -> None:
        assert self.location is not None
        end = self.offset + len(chunk) - 1
        resp = self.reg.request(
            "PATCH",
            self.location,
            key=self.key,
            content=chunk,
            attempts=1,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{self.offset}-{end}",
            },
        )
        resp.close()
        if resp.status_code in {404, 416}:
            raise _Resync(f"PATCH answered HTTP {resp.status_code}")
        if resp.status_code != 202:
            raise self.reg.unexpected("PATCH", self.location, resp)
        self._moved(resp)
        self.offset = end + 1
        m = _RANGE_RE.fullmatch(resp.headers.get("Range", ""))
        if m and int(m.group(1)) != end:
            raise _Resync(f"registry reports Range {resp.headers['Range']} after {end}")

    def _check_local(self) -> None:
        actual = Digest("sha256", self._hash.hexdigest())
        if actual != self.digest:
            self._cancel()
            raise DigestMismatchError(
                f"source of blob push to {self.repository}", str(self.digest), str(actual)
            )

    def _cancel(self) -> None:
        if self.location is not None:
            with contextlib.suppress(TransportError):
                self.reg.request("DELETE", self.location, key=self.key, attempts=1).close()

    def _finish(self, body: bytes = b"") -> None:
        assert self.location is not None
        url = self.location.copy_merge_params({"digest": str(self.digest)})
        resp = self.reg.request(
            "PUT",
            url,
            key=self.key,
            content=body,
            attempts=1,
            headers={"Content-Type": "application/octet-stream"},
        )
        resp.close()
        if resp.status_code == 201:
            return
        if resp.status_code == 400:
            raise DataError(
                f"PUT {url.copy_with(query=None)}: registry rejected blob "
                f"{self.digest} (HTTP 400{error_detail(resp)})"
            )
        raise self.reg.unexpected("PUT", url, resp)

    # -- the push ---------------------------------------------------------------

    def run(self, f: Readable, *, mount_from: str | None, resume_location: str | None) -> None:
        lim = self.reg.limits
        if resume_location is not None:
            self.location = httpx.URL(resume_location)
            self._sync(f)
        elif self._start(mount_from):
            return
        if self.offset == 0 and self.size <= lim.chunk_size:
            body = self._read(f, self.size)
            self._check_local()
            self._finish(body)
            return
        failures = 0
        while True:
            try:
                while self.offset < self.size:
                    self._patch(self._read(f, min(lim.chunk_size, self.size - self.offset)))
                break
            except (TransportError, _Resync) as e:
                failures += 1
                if failures >= lim.attempts:
                    assert self.location is not None
                    raise UploadInterruptedError(
                        f"upload of {self.digest} to {self.repository} stopped at byte "
                        f"{self.offset} of {self.size} after {failures} failure(s): {e}; "
                        "push again with resume_location to continue",
                        str(self.location),
                        self.offset,
                    ) from e
                log.warning("upload of %s: %s; resyncing", self.digest, e)
                self.reg.sleep(lim.backoff * 2 ** (failures - 1))
                self._sync(f)
        self._check_local()
        self._finish()
        log.info("pushed blob %s (%d bytes) to %s", self.digest, self.size, self.repository)
