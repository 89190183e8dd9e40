"""A client for the OCI distribution spec v1.1 over HTTP(S), on httpx.

Endpoints used (spec "Endpoints" table): ``GET /v2/`` (end-1),
``HEAD``/``GET /v2/<name>/blobs/<digest>`` (end-2), ``POST …/blobs/uploads/``
(end-4, end-11 with ``?mount=&from=``), ``PATCH <location>`` (end-5),
``PUT <location>?digest=`` (end-6), ``GET <location>`` (upload status),
``PUT``/``GET``/``HEAD``/``DELETE /v2/<name>/manifests/<reference>`` (end-7,
end-3, end-9), ``GET /v2/<name>/tags/list?n=`` (end-8b, ``Link`` rel="next").

Robustness, all bounded by :class:`ClientLimits`: 429/5xx and connection
errors are retried with exponential backoff ``attempts`` times, then raise
:class:`~powernode.errors.TransportError` naming the URL and status; every
read has a timeout, so a server that stalls mid-blob fails; blob pulls
stream to a temporary file, hashing while writing, deleted on a mismatch,
truncation or timeout; chunked pushes resume from the ``Range`` the registry reports for the
  upload session. Distribution 2.x signs the offset into the ``_state`` of
  each ``Location`` and drops a session whose chunk was cut mid-body, so a
  resume that finds the session gone starts a new one (still bounded).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from powernode.errors import DataError, DigestMismatchError, TransportError, VerificationError
from powernode.oci.auth import Authenticator, Credentials
from powernode.oci.cache import BlobCache, Readable, write_verified
from powernode.oci.digest import Digest, verify_bytes
from powernode.oci.errors import AuthError, NotFoundError, error_detail
from powernode.oci.mediatypes import MANIFEST_TYPES, MAX_MANIFEST_SIZE, Manifest
from powernode.oci.ranges import RawConnections, read_range
from powernode.oci.refs import Reference, check_repository
from powernode.oci.upload import ChunkedUpload

__all__ = ["ClientLimits", "Credentials", "DistributionRegistry"]

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class ClientLimits:
    """Bounds on everything a remote registry can make the client do."""

    chunk_size: int = 4 << 20  # PATCH size and the monolithic-PUT threshold
    read_chunk: int = 1 << 20  # streaming pulls: never more than this in memory
    attempts: int = 3  # tries per request (and per blob download / upload)
    backoff: float = 0.5  # seconds before the 2nd try; doubles each time
    connect_timeout: float = 10.0
    read_timeout: float = 60.0  # per socket read: a stalled body fails after this
    max_tag_pages: int = 1000
    tags_page_size: int = 1000
    max_blob_size: int = 1 << 40  # when the caller knows no size


class DistributionRegistry:
    """A :class:`~powernode.oci.registry.Registry` on an OCI distribution endpoint."""

    def __init__(
        self,
        base_url: str,
        *,
        credentials: Credentials | None = None,
        transport: httpx.BaseTransport | None = None,
        limits: ClientLimits | None = None,
        sleep: Callable[[float], None] = time.sleep,
        verify: bool | str = True,
    ) -> None:
        self.base_url = httpx.URL(base_url.rstrip("/"))
        self.limits = limits or ClientLimits()
        self.sleep = sleep
        lim = self.limits
        self._client = httpx.Client(
            transport=transport,
            verify=verify,
            follow_redirects=True,  # httpx drops Authorization on cross-origin redirects
            timeout=httpx.Timeout(lim.read_timeout, connect=lim.connect_timeout),
        )
        self._auth = Authenticator(self.base_url, credentials)
        self.raw = RawConnections(self.base_url, verify, lim, enabled=transport is None)

    def __repr__(self) -> str:
        return f"DistributionRegistry({str(self.base_url)!r})"

    def close(self) -> None:
        self._client.close()
        self.raw.close()

    def __enter__(self) -> DistributionRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one request, with auth and bounded retries -----------------------------

    def url(self, path: str) -> httpx.URL:
        return self.base_url.join(path)

    def request(
        self,
        method: str,
        url: httpx.URL,
        *,
        key: str,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        stream: bool = False,
        attempts: int | None = None,
    ) -> httpx.Response:
        """Send with auth; retry connection errors and 429/5xx; return any other answer.

        ``key`` names the access the request needs (``<repository>:pull`` …),
        so bearer tokens are cached per scope. The caller closes streamed
        responses.
        """
        tries = attempts or self.limits.attempts
        where = f"{method} {url.copy_with(query=None)}"
        authed = False
        attempt = 0
        last = ""
        while attempt < tries:
            hdrs = {**(headers or {}), **self._auth.headers(url, key)}
            req = self._client.build_request(method, url, content=content, headers=hdrs)
            try:
                resp = self._client.send(req, stream=stream)
            except httpx.TimeoutException as e:
                last = f"timed out ({type(e).__name__})"
            except httpx.TransportError as e:
                last = f"connection failed ({e})"
            else:
                if resp.status_code == 401 and not authed:
                    challenge = resp.headers.get("WWW-Authenticate")
                    resp.close()
                    authed = True
                    self._auth.answer(self._client, url, key, challenge)
                    continue  # an auth round trip is not a failed attempt
                if resp.status_code in {401, 403}:
                    detail = error_detail(resp)
                    resp.close()
                    raise AuthError(
                        f"{where}: HTTP {resp.status_code}{detail}: the registry refused "
                        f"{self._auth.who()}; check the credentials and their permissions "
                        "on this repository"
                    )
                if resp.status_code not in RETRY_STATUS:
                    return resp
                last = f"HTTP {resp.status_code}{error_detail(resp)}"
                resp.close()
            attempt += 1
            log.warning("%s: %s (attempt %d of %d)", where, last, attempt, tries)
            if attempt < tries:
                self.sleep(self.limits.backoff * 2 ** (attempt - 1))
        raise TransportError(
            f"{where}: {last} after {tries} attempt(s); the registry is unavailable or "
            "failing, retry later"
        )

    def auth_headers(self, url: httpx.URL, key: str) -> dict[str, str]:
        return self._auth.headers(url, key)

    def unexpected(self, method: str, url: httpx.URL, resp: httpx.Response) -> TransportError:
        return TransportError(
            f"{method} {url.copy_with(query=None)}: unexpected HTTP {resp.status_code}"
            f"{error_detail(resp)}"
        )

    def check(self) -> None:
        """``GET /v2/``: raise unless this is a distribution endpoint we may use."""
        url = self.url("/v2/")
        resp = self.request("GET", url, key="")
        resp.close()
        if resp.status_code != 200:
            raise self.unexpected("GET", url, resp)

    # -- blobs -----------------------------------------------------------------

    def blob_url(self, repository: str, digest: Digest) -> httpx.URL:
        return self.url(f"/v2/{check_repository(repository)}/blobs/{digest}")

    def blob_exists(self, repository: str, digest: Digest) -> bool:
        url = self.blob_url(repository, digest)
        resp = self.request("HEAD", url, key=f"{repository}:pull")
        resp.close()
        if resp.status_code == 200:
            return True
        if resp.status_code == 404:
            return False
        raise self.unexpected("HEAD", url, resp)

    def _body(self, resp: httpx.Response, url: httpx.URL) -> Iterator[bytes]:
        try:
            yield from resp.iter_bytes(self.limits.read_chunk)
        except httpx.TimeoutException as e:
            raise _BodyError(f"GET {url}: the server stalled mid-body ({type(e).__name__})") from e
        except httpx.HTTPError as e:
            raise _BodyError(f"GET {url}: download cut short: {e}") from e

    def pull_blob_to(
        self,
        repository: str,
        digest: Digest,
        target: Path | BlobCache,
        *,
        size: int | None = None,
    ) -> Path:
        if isinstance(target, BlobCache) and target.has(digest):
            log.debug("blob %s already cached", digest)
            return target.path(digest)
        dest = target.path(digest) if isinstance(target, BlobCache) else target
        url = self.blob_url(repository, digest)
        limit = size if size is not None else self.limits.max_blob_size
        tries = self.limits.attempts
        for attempt in range(1, tries + 1):
            resp = self.request("GET", url, key=f"{repository}:pull", stream=True)
            try:
                if resp.status_code == 404:
                    raise NotFoundError(f"GET {url}: no blob {digest} in {repository}")
                if resp.status_code != 200:
                    raise self.unexpected("GET", url, resp)
                declared = int(resp.headers.get("Content-Length", "-1"))
                if declared > limit:
                    raise VerificationError(
                        f"GET {url}: Content-Length {declared} exceeds the expected "
                        f"{limit} bytes of {digest}; refusing to download"
                    )
                return write_verified(
                    dest,
                    self._body(resp, url),
                    digest,
                    size=size,
                    max_size=limit,
                    what=f"GET {url}",
                )
            except _BodyError as e:
                log.warning("%s (attempt %d of %d)", e, attempt, tries)
                if attempt == tries:
                    raise TransportError(f"{e} after {tries} attempt(s); nothing was kept") from e
                self.sleep(self.limits.backoff * 2 ** (attempt - 1))
            finally:
                resp.close()
        raise AssertionError("unreachable")

    def read_blob_range(
        self, repository: str, digest: Digest, offset: int, length: int
    ) -> Iterator[bytes]:
        """Bytes ``[offset, offset+length)``, unverified (:mod:`.ranges` has a faster form)."""
        return read_range(self, repository, digest, offset, length)

    def push_blob(
        self,
        repository: str,
        source: Path | Readable,
        digest: Digest,
        size: int,
        *,
        mount_from: str | None = None,
        resume_location: str | None = None,
    ) -> None:
        """Upload a blob unless present: mount, monolithic PUT, or chunked PATCHes.

        Raises :class:`UploadInterruptedError` (with ``location``) when a
        chunked upload failed ``attempts`` times; pass that location back as
        ``resume_location`` to continue where the registry stopped.
        """
        check_repository(repository)
        if resume_location is None and self.blob_exists(repository, digest):
            log.debug("blob %s already in %s", digest, repository)
            return
        upload = ChunkedUpload(self, repository, digest, size)
        if isinstance(source, Path):
            with source.open("rb") as f:
                upload.run(f, mount_from=mount_from, resume_location=resume_location)
        else:
            upload.run(source, mount_from=mount_from, resume_location=resume_location)

    # -- manifests and tags ---------------------------------------------------

    def manifest_url(self, ref: Reference) -> httpx.URL:
        return self.url(f"/v2/{ref.repository}/manifests/{ref.target}")

    def push_manifest(self, ref: Reference, data: bytes, media_type: str) -> Digest:
        if len(data) > MAX_MANIFEST_SIZE:
            raise DataError(f"manifest for {ref} is {len(data)} bytes; limit {MAX_MANIFEST_SIZE}")
        digest = Digest.of_bytes(data)
        if ref.digest is not None:
            verify_bytes(f"manifest for {ref}", data, ref.digest)
        url = self.manifest_url(ref)
        resp = self.request(
            "PUT",
            url,
            key=f"{ref.repository}:pull,push",
            content=data,
            headers={"Content-Type": media_type},
        )
        resp.close()
        if resp.status_code in {400, 404}:
            raise DataError(
                f"PUT {url}: the registry rejected the manifest "
                f"(HTTP {resp.status_code}{error_detail(resp)}); push its blobs "
                "first and check its JSON"
            )
        if resp.status_code != 201:
            raise self.unexpected("PUT", url, resp)
        echoed = resp.headers.get("Docker-Content-Digest")
        if echoed and echoed != str(digest):
            raise DigestMismatchError(f"PUT {url} (Docker-Content-Digest)", str(digest), echoed)
        log.info("pushed %s -> %s", ref, digest)
        return digest

    def get_manifest(self, ref: Reference) -> Manifest:
        url = self.manifest_url(ref)
        resp = self.request(
            "GET",
            url,
            key=f"{ref.repository}:pull",
            stream=True,
            headers={"Accept": ", ".join(MANIFEST_TYPES)},
        )
        try:
            if resp.status_code == 404:
                raise NotFoundError(f"GET {url}: no manifest {ref}{error_detail(resp)}")
            if resp.status_code != 200:
                raise self.unexpected("GET", url, resp)
            data = b""
            for chunk in self._body(resp, url):
                data += chunk
                if len(data) > MAX_MANIFEST_SIZE:
                    raise DataError(f"GET {url}: manifest exceeds {MAX_MANIFEST_SIZE} bytes")
        except _BodyError as e:
            raise TransportError(str(e)) from e
        finally:
            resp.close()
        actual = Digest.of_bytes(data)
        expected_text = str(ref.digest) if ref.digest else resp.headers.get("Docker-Content-Digest")
        if expected_text and expected_text != str(actual):
            raise DigestMismatchError(f"manifest {ref} from {url}", expected_text, str(actual))
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        return Manifest(data, media_type, actual)

    def list_tags(self, repository: str) -> list[str]:
        """All tags of ``repository`` (empty if it has none or does not exist), sorted."""
        url = self.url(f"/v2/{check_repository(repository)}/tags/list")
        url = url.copy_merge_params({"n": str(self.limits.tags_page_size)})
        tags: list[str] = []
        for _ in range(self.limits.max_tag_pages):
            resp = self.request("GET", url, key=f"{repository}:pull")
            if resp.status_code == 404:
                return []
            if resp.status_code != 200:
                raise self.unexpected("GET", url, resp)
            page = _json_object(resp, url).get("tags") or []
            if not isinstance(page, list) or not all(isinstance(t, str) for t in page):
                raise DataError(f"GET {url}: 'tags' is not a list of strings")
            tags.extend(page)
            nxt = resp.links.get("next", {}).get("url")
            if not nxt:
                return sorted(tags)
            url = url.join(nxt)
        raise DataError(f"GET {url}: more than {self.limits.max_tag_pages} pages of tags")

    def delete_manifest(self, ref: Reference) -> None:
        digest = ref.digest or self.get_manifest(ref).digest
        url = self.url(f"/v2/{ref.repository}/manifests/{digest}")
        resp = self.request("DELETE", url, key=f"{ref.repository}:delete")
        resp.close()
        if resp.status_code == 404:
            raise NotFoundError(f"DELETE {url}: no manifest {digest}{error_detail(resp)}")
        if resp.status_code == 405:
            raise TransportError(
                f"DELETE {url}: the registry does not allow deletes "
                "(distribution: set storage.delete.enabled)"
            )
        if resp.status_code != 202:
            raise self.unexpected("DELETE", url, resp)
        log.info("deleted %s (%s)", ref, digest)


class _BodyError(Exception):
    """A response body that broke off; retried by the caller, never escapes."""


def _json_object(
    resp: httpx.Response, url: httpx.URL
) -> dict[str, Any]:  # Any: a JSON object read by key
    try:
        body = json.loads(resp.content[: 16 << 20])
    except ValueError as e:
        raise DataError(f"GET {url}: the answer is not JSON ({e})") from e
    if not isinstance(body, dict):
        raise DataError(f"GET {url}: the answer is not a JSON object")
    return body
