"""Where instances run: the provider seam behind provision/terminate.

A provider turns a request into a machine (KVM, a cloud, bare metal via
PXE). The platform only needs the two calls below; the one here records
what it was asked and starts nothing, which is what tests and a platform
without a hypervisor use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class ProvisionRequest:
    instance_id: str
    node_id: str
    hostname: str
    template_name: str


class InstanceProvider(Protocol):
    name: str

    def provision(self, request: ProvisionRequest) -> str:
        """Start the machine; returns the provider's reference for it."""

    def terminate(self, provider_ref: str) -> None:
        """Stop and remove the machine; idempotent."""


@dataclass
class RecordingProvider:
    """Records every call and starts nothing."""

    name: str = "recording"
    provisioned: list[ProvisionRequest] = field(default_factory=list)
    terminated: list[str] = field(default_factory=list)

    def provision(self, request: ProvisionRequest) -> str:
        self.provisioned.append(request)
        return f"recorded-{request.instance_id}"

    def terminate(self, provider_ref: str) -> None:
        self.terminated.append(provider_ref)
