"""A platform with the node API on each database, a clock the test moves, enrolled nodes.

The caller's client certificate reaches the app through the one dependency
``node_api.client_certificate``; in process it is overridden to read the DER
from a test header (hex), which only exists here — served for real, the
certificate comes from the TLS connection (tlsserve.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import start_blocking_portal
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from fastapi import Request
from httpx import ASGITransport, AsyncClient, Response
from sqlalchemy.orm import Session

from powernode.platform.api import node_api
from powernode.platform.app import create_app
from powernode.platform.db.session import make_engine
from powernode.platform.services import nodes
from powernode.platform.services.context import SCOPES, Actor, Ctx
from powernode.platform.services.nodeapi.identity import NodeApiPolicy
from powernode.platform.services.providers import RecordingProvider
from powernode.platform.services.tokens import create_token
from powernode.platform.settings import Settings
from tests.platform.conftest import ROLES, Platform

CERT_HEADER = "x-test-client-cert"
NODE = "/node_api"


class ManualClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Creds:
    instance_id: str
    key: Ed25519PrivateKey
    cert_pem: str

    @property
    def der(self) -> bytes:
        cert = x509.load_pem_x509_certificate(self.cert_pem.encode())
        return cert.public_bytes(serialization.Encoding.DER)

    @property
    def serial(self) -> str:
        return format(x509.load_pem_x509_certificate(self.cert_pem.encode()).serial_number, "x")


def csr_pem(key: Ed25519PrivateKey | None = None, cn: str = "powernode-agent") -> str:
    key = key or Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, None)
    return csr.public_bytes(serialization.Encoding.PEM).decode()


@dataclass
class NodePlatform(Platform):
    clock: ManualClock = None  # type: ignore[assignment]
    hostnames: int = 0

    @property
    def state(self) -> Any:
        return self.app.state.platform

    def instance(self, hostname: str | None = None, template: str = "base") -> str:
        """A new node and its instance (provisioning); the instance id."""
        self.hostnames += 1
        hostname = hostname or f"node-{self.hostnames}"
        with Session(self.engine) as session:
            ctx = Ctx(session, Actor("test", None, frozenset(SCOPES)), self.clock())
            nodes.create_node(ctx, hostname, template)
            inst = nodes.provision_instance(ctx, self.provider, hostname)
            session.commit()
            return inst.id

    def token(self, instance_id: str, **body: Any) -> str:
        r = self.call("POST", f"/node_instances/{instance_id}/bootstrap_tokens", json=body)
        assert r.status_code == 201, r.text
        token: str = r.json()["token"]
        return token

    def enroll_raw(self, token: str, csr: str, **extra: Any) -> Response:
        return self.raw(
            "POST", f"{NODE}/enroll", json={"bootstrap_token": token, "csr_pem": csr, **extra}
        )

    def enroll(self, instance_id: str | None = None) -> Creds:
        instance_id = instance_id or self.instance()
        key = Ed25519PrivateKey.generate()
        r = self.enroll_raw(self.token(instance_id), csr_pem(key))
        assert r.status_code == 201, r.text
        return Creds(instance_id, key, r.json()["certificate_pem"])

    def node(self, creds: Creds | bytes | None, method: str, path: str, **kw: Any) -> Response:
        der = creds.der if isinstance(creds, Creds) else creds
        headers = {CERT_HEADER: der.hex()} if der is not None else {}
        return self.raw(method, NODE + path, headers=headers, **kw)


@pytest.fixture
def clock(fixed_now: datetime) -> ManualClock:
    return ManualClock(fixed_now)


async def _test_client_certificate(request: Request) -> bytes | None:
    value = request.headers.get(CERT_HEADER)
    return bytes.fromhex(value) if value else None


@pytest.fixture
def node_platform(db_url: str, tmp_path: Path, clock: ManualClock) -> Iterator[NodePlatform]:
    settings = Settings(data_dir=tmp_path / "data", database_url=db_url, migrate_on_start=False)
    provider = RecordingProvider()
    app = create_app(settings, provider=provider, clock=clock, node_policy=NodeApiPolicy())
    app.dependency_overrides[node_api.client_certificate] = _test_client_certificate
    engine = make_engine(db_url)
    tokens: dict[str, str] = {}
    with Session(engine) as session:
        ctx = Ctx(session, Actor("test-setup", None, frozenset(SCOPES)), clock())
        for role, scopes in ROLES.items():
            tokens[role] = create_token(ctx, role, scopes)[1]
        session.commit()
    with start_blocking_portal() as portal:
        client = AsyncClient(transport=ASGITransport(app=app), base_url="http://platform.test")
        try:
            yield NodePlatform(app, portal, client, engine, provider, tokens, clock=clock)
        finally:
            portal.call(client.aclose)
    app.state.platform.engine.dispose()
    engine.dispose()


def now_utc() -> datetime:
    return datetime.now(UTC)
