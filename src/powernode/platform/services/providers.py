"""Where instances run: the provider seam behind provision/terminate.

A provider turns a request into a machine (KVM, a cloud, bare metal via
PXE). The platform needs the calls below. ``RecordingProvider`` records what
it was asked and starts nothing, which is what tests and a platform without
a hypervisor use; ``LocalQemuProvider`` (qemu_provider.py) boots VMs on the
platform's host. Settings choose one (``provider = "recording" | "qemu"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from powernode.platform.services.boot_set import BootModule
    from powernode.platform.settings import Settings


@dataclass(frozen=True)
class ProvisionRequest:
    instance_id: str
    node_id: str
    hostname: str
    template_name: str
    # A single-use enrollment token minted for this instance (services/nodeapi/enroll.py),
    # when the provider asks for one (``bootstrap_ttl``): it goes into the seed bundle.
    bootstrap_token: str | None = None
    # The instance's desired set at provisioning (services/boot_set.py): its first module
    # set, which a provider that boots an initramfs hands over with the seed.
    modules: tuple[BootModule, ...] = ()


class InstanceProvider(Protocol):
    name: str

    @property
    def bootstrap_ttl(self) -> timedelta | None:
        """How long the seed's bootstrap token lives; None: the provider needs none."""

    def provision(self, request: ProvisionRequest) -> str:
        """Start the machine; returns the provider's reference for it."""

    def terminate(self, provider_ref: str) -> None:
        """Stop and remove the machine; idempotent."""

    def reboot(self, provider_ref: str) -> None:
        """Power-cycle the machine, keeping its disks and identity."""

    def is_running(self, provider_ref: str) -> bool | None:
        """Whether the machine still runs; None when the provider cannot tell."""

    def console(self, provider_ref: str, max_bytes: int) -> bytes | None:
        """The tail of the machine's serial console; None when the provider keeps none."""


@dataclass
class RecordingProvider:
    """Records every call and starts nothing."""

    name: str = "recording"
    provisioned: list[ProvisionRequest] = field(default_factory=list)
    terminated: list[str] = field(default_factory=list)
    rebooted: list[str] = field(default_factory=list)

    @property
    def bootstrap_ttl(self) -> timedelta | None:
        return None

    def provision(self, request: ProvisionRequest) -> str:
        self.provisioned.append(request)
        return f"recorded-{request.instance_id}"

    def terminate(self, provider_ref: str) -> None:
        self.terminated.append(provider_ref)

    def reboot(self, provider_ref: str) -> None:
        self.rebooted.append(provider_ref)

    def is_running(self, provider_ref: str) -> bool | None:
        return None

    def console(self, provider_ref: str, max_bytes: int) -> bytes | None:
        return None


def provider_of(settings: Settings) -> InstanceProvider:
    """The provider the settings name."""
    if settings.provider == "recording":
        return RecordingProvider()
    from powernode.platform.services.qemu_provider import (  # noqa: PLC0415 - only with qemu
        LocalQemuProvider,
        QemuConfig,
    )

    return LocalQemuProvider(
        QemuConfig(
            image_dir=settings.effective_image_dir,
            state_dir=settings.effective_qemu_state_dir,
            platform_url=settings.effective_guest_platform_url,
            ca_pem=settings.guest_ca_pem(),
            modules_registry=settings.effective_guest_modules_registry,
            modules_registry_name=settings.effective_guest_modules_registry_name,
            memory_mb=settings.qemu_memory_mb,
            vcpus=settings.qemu_vcpus,
            arch=settings.qemu_arch,
            machine=settings.qemu_machine,
            accel=settings.qemu_accel,
            firmware=settings.qemu_firmware,
            binary=settings.qemu_binary,
            persist_disk_mb=settings.qemu_persist_disk_mb,
            boot_store=settings.effective_qemu_boot_store,
            bootstrap_ttl=timedelta(seconds=settings.bootstrap_token_ttl_seconds),
        )
    )
