"""Start a real OCI registry (Debian's ``docker-registry``, CNCF distribution 2.8).

Reusable by any test package::

    from tests.oci.registry_fixture import run_registry

    with run_registry(tmp_path) as reg:          # anonymous
        ...reg.url...
    with run_registry(tmp_path, htpasswd=Credentials("u", "p")) as reg:
        ...

or through the session fixtures ``oci_registry`` / ``oci_registry_basic``
(import them into a conftest.py). Each registry stores into its own temp
directory with deletes enabled, and is killed on exit. Debian's packaged
config (htpasswd auth) is not used.

The registry binds ``127.0.0.1:0`` itself and the fixture reads the port it
got from /proc (its own listening socket). Picking a free port first and
passing it in raced with every other process on the machine: another
server could take the port in between, and the readiness probe then
talked to *that* server (test_bearer_token_auth once met an anonymous
registry that was not its own and failed under load).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from powernode.oci.auth import Credentials
from powernode.oci.digest import Digest
from tests.conftest import require_tool

READY_TIMEOUT = 15.0  # seconds; distribution starts in well under one here
HTTP_SECRET = "powernode-test-secret"  # fixed, so upload _state survives a restart


@dataclass(frozen=True)
class TokenAuth:
    """Settings for distribution's ``auth.token`` (see tests/oci/token_server.py)."""

    realm: str
    service: str
    issuer: str
    root_cert_bundle: Path


@dataclass(frozen=True)
class RunningRegistry:
    url: str
    storage: Path
    log: Path
    credentials: Credentials | None

    def blob_data(self, digest: Digest) -> Path:
        """Where distribution's filesystem driver keeps a blob's bytes."""
        return (
            self.storage / "docker/registry/v2/blobs/sha256" / digest.hex[:2] / digest.hex / "data"
        )


def _config(storage: Path, auth: str) -> str:
    return f"""version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:0
  secret: {HTTP_SECRET}
{auth}"""


def _auth_section(workdir: Path, htpasswd: Credentials | None, token: TokenAuth | None) -> str:
    if htpasswd is not None:
        tool = require_tool("htpasswd")
        line = subprocess.run(
            [tool, "-Bbn", htpasswd.username, htpasswd.password],
            check=True,
            capture_output=True,
            timeout=30,
        ).stdout
        (workdir / "htpasswd").write_bytes(line.strip() + b"\n")
        return f"auth:\n  htpasswd:\n    realm: powernode-test\n    path: {workdir / 'htpasswd'}\n"
    if token is not None:
        return (
            f"auth:\n  token:\n    realm: {token.realm}\n    service: {token.service}\n"
            f"    issuer: {token.issuer}\n    rootcertbundle: {token.root_cert_bundle}\n"
        )
    return ""


def listening_port(pid: int) -> int | None:
    """The TCP port process ``pid`` listens on (IPv4), from /proc; None if none yet."""
    sockets: set[str] = set()
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    sockets.add(target[len("socket:[") : -1])
    # /proc/net/tcp: "sl local_address rem_address st ... inode"; st 0A is LISTEN
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) > 9 and fields[3] == "0A" and fields[9] in sockets:
            return int(fields[1].rsplit(":", 1)[1], 16)
    return None


def _wait_ready(proc: subprocess.Popen[bytes], log: Path) -> str:
    """The registry's URL once it answers on the port it bound itself."""
    deadline = time.monotonic() + READY_TIMEOUT
    url: str | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited {proc.returncode}:\n{log.read_text()}")
        if url is None and (port := listening_port(proc.pid)) is not None:
            url = f"http://127.0.0.1:{port}"
        if url is not None:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/v2/", timeout=1.0).status_code in {200, 401}:
                    return url
        time.sleep(0.05)
    raise RuntimeError(f"docker-registry not ready within {READY_TIMEOUT}s:\n{log.read_text()}")


@contextlib.contextmanager
def run_registry(
    workdir: Path,
    *,
    htpasswd: Credentials | None = None,
    token: TokenAuth | None = None,
) -> Iterator[RunningRegistry]:
    """Run ``docker-registry serve`` until the block exits."""
    exe = require_tool("docker-registry")
    workdir.mkdir(parents=True, exist_ok=True)
    storage = workdir / "storage"
    storage.mkdir(exist_ok=True)
    auth = _auth_section(workdir, htpasswd, token)
    log = workdir / "registry.log"
    config = workdir / "config.yml"
    config.write_text(_config(storage, auth))
    with log.open("wb") as out:
        proc = subprocess.Popen([exe, "serve", str(config)], stdout=out, stderr=out)
    try:
        url = _wait_ready(proc, log)
        yield RunningRegistry(url, storage, log, htpasswd)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="session")
def oci_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """An anonymous registry shared by the session; use a unique repository per test."""
    with run_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture(scope="session")
def oci_registry_basic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """A registry that asks for htpasswd basic auth (user ``tester``)."""
    creds = Credentials("tester", "s3cret-pass")
    with run_registry(tmp_path_factory.mktemp("registry-basic"), htpasswd=creds) as reg:
        yield reg
