"""LocalQemuProvider: instances as QEMU VMs on the platform's own host.

Per instance, a directory ``<state_dir>/<instance id>/`` (mode 0700)::

    claim         created with O_EXCL before anything else: the instance's one VM
    qemu.pid      the VM's pid (QEMU's -pidfile; it runs -daemonize)
    persist.raw   the persist disk: raw ext4 made with ``mkfs.ext4 -O verity``, holding the
                  first module set's images and objects in the node's store (boot_set.py)
    seed.tar      the seed bundle handed over fw-cfg (0600: it holds the token and the
                  first set's ``modules.set``; seed_bundle.py)
    console.log   the serial console (kept after terminate)
    qemu.log      QEMU's own stderr

The claim is never removed, so an instance id gets at most one VM in its
life, whatever two platform processes do at the same moment. A restarted
platform finds its VMs through ``qemu.pid``: a pid counts only while its
``/proc/<pid>/cmdline`` names the instance (qemu_vm.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from powernode.image.contract import PERSIST_LABEL
from powernode.platform.problems import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    ProviderError,
)
from powernode.platform.services import boot_image, boot_set, qemu_accel, qemu_vm
from powernode.platform.services.providers import ProvisionRequest
from powernode.platform.services.seed_bundle import Seed

log = logging.getLogger(__name__)

_MAX_CONSOLE_BYTES = 1 << 20


@contextlib.contextmanager
def _locked(d: Path) -> Iterator[None]:
    """The instance's VM lock (flock on its claim): one reboot or terminate at a time, in
    this process or another platform process on the host."""
    try:
        fd = os.open(d / "claim", os.O_RDONLY)
    except FileNotFoundError:
        raise NotFoundError(f"instance {d.name} has no VM on this platform") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True)
class QemuConfig:
    """Where the images and the VMs' state are, and what each VM gets."""

    image_dir: Path
    state_dir: Path
    # The platform's URL as the guest sees it (user networking: host 127.0.0.1 is 10.0.2.2).
    platform_url: str
    ca_pem: str = ""
    # The module registry as the guest sees it (the agent's modules_registry; empty: the
    # agent's own setting, else each module reference's host).
    modules_registry: str = ""
    modules_registry_name: str = ""  # the registry's host[:port] as signatures name it
    memory_mb: int = 512
    vcpus: int = 1
    arch: str = "x86_64"
    machine: str = "q35"
    accel: str = "auto"
    firmware: Path | None = None
    binary: str = ""  # empty: qemu-system-<arch>
    persist_disk_mb: int = 1024
    boot_store: Path | None = None  # where first module sets come from (boot_set.py)
    extra_args: tuple[str, ...] = ()
    bootstrap_ttl: timedelta = timedelta(hours=1)
    stop_timeout: float = 10.0
    start_timeout: float = 60.0
    probe_timeout: float = 10.0

    @property
    def qemu_binary(self) -> str:
        return self.binary or f"qemu-system-{self.arch}"


def check_instance_id(value: str) -> str:
    """A canonical UUID, or InvalidInputError (it names a directory: no path tricks)."""
    try:
        canonical = str(uuid.UUID(value))
    except ValueError:
        canonical = ""
    if canonical != value:
        raise InvalidInputError(f"instance id {value!r} is not a canonical UUID", field="id")
    return value


@dataclass
class LocalQemuProvider:
    """Boots each instance's kernel-initrd under QEMU (docs/qemu-provider.md)."""

    config: QemuConfig
    name: str = "qemu"
    _accel: str | None = field(default=None, init=False, repr=False)

    @property
    def bootstrap_ttl(self) -> timedelta | None:
        return self.config.bootstrap_ttl

    # --- paths -------------------------------------------------------------------

    def instance_dir(self, instance_id: str) -> Path:
        return self.config.state_dir / check_instance_id(instance_id)

    def console_path(self, instance_id: str) -> Path:
        return self.instance_dir(instance_id) / "console.log"

    def _tools(self) -> None:
        for tool in (self.config.qemu_binary, "mkfs.ext4"):
            if shutil.which(tool) is None:
                raise ProviderError(
                    f"{tool} is not installed (Debian: qemu-system-x86, e2fsprogs); "
                    "the qemu provider needs it"
                )

    def accel(self, kernel: Path) -> str:
        if self._accel is None:
            self._accel = qemu_accel.resolve(
                self.config.accel,
                self.config.qemu_binary,
                self.config.machine,
                kernel,
                state_dir=self.config.state_dir,
                timeout=self.config.probe_timeout,
            )
        return self._accel

    # --- the provider calls ---------------------------------------------------------

    def provision(self, request: ProvisionRequest) -> str:
        iid = check_instance_id(request.instance_id)
        if not request.bootstrap_token:
            raise ProviderError(f"instance {iid}: no bootstrap token for the seed bundle")
        # Every check before the first write: bad input leaves nothing behind.
        image = boot_image.load(self.config.image_dir)
        self._tools()
        if request.modules:
            if self.config.boot_store is None:
                raise ProviderError(f"instance {iid}: a module set to boot but no boot store")
            boot_set.check(request.modules, self.config.boot_store)
        accel = self.accel(image.kernel)
        d = self.instance_dir(iid)
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(d / "claim", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise ConflictError(
                f"instance {iid} already has a VM (claimed in {d}); one instance, one VM: "
                "terminate it and provision a new instance",
                instance_id=iid,
            ) from None
        with os.fdopen(fd, "w") as f:
            json.dump({"instance_id": iid, "platform_pid": os.getpid()}, f)
        try:
            return self._start(request, d, image, accel)
        except BaseException:
            self._cleanup(d, keep_console=False)
            raise

    def _start(
        self,
        request: ProvisionRequest,
        d: Path,
        image: boot_image.BootImage,
        accel: str,
    ) -> str:
        iid = request.instance_id
        disk = d / "persist.raw"
        modules_set = self._format_persist(request, d, disk)
        seed_file = d / "seed.tar"
        seed = Seed(
            iid,
            self.config.platform_url,
            self.config.ca_pem,
            request.bootstrap_token or "",
            modules_set,
            self.config.modules_registry,
            self.config.modules_registry_name,
        )
        fd = os.open(seed_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(seed.to_tar())
        spec = qemu_vm.VmSpec(
            binary=self.config.qemu_binary,
            instance_id=iid,
            machine=self.config.machine,
            accel=accel,
            memory_mb=self.config.memory_mb,
            vcpus=self.config.vcpus,
            kernel=image.kernel,
            initrd=image.initrd,
            cmdline=boot_image.instance_cmdline(image, iid, seed.platform_url),
            seed_file=seed_file,
            persist_disk=disk,
            console_log=d / "console.log",
            firmware=self.config.firmware,
            extra_args=self.config.extra_args,
        )
        # -daemonize: QEMU returns once the machine is set up (or with the reason it could
        # not be) and the VM is nobody's child: it outlives a platform restart, leaves no
        # zombie, and QEMU writes the pidfile itself.
        args = [*qemu_vm.argv(spec), "-daemonize", "-pidfile", str(d / "qemu.pid")]
        (d / "qemu.argv").write_text(json.dumps(args) + "\n")  # what reboot starts again
        self._launch(d, args)
        log.info("instance %s: QEMU pid %s (%s)", iid, self._pid(d), accel)
        return iid

    def _launch(self, d: Path, args: list[str]) -> None:
        iid = d.name
        try:
            run = subprocess.run(
                args,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=self.config.start_timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise ProviderError(
                f"QEMU did not set up instance {iid}'s machine within "
                f"{self.config.start_timeout:.0f} s"
            ) from e
        (d / "qemu.log").write_text(run.stdout + run.stderr)
        pid = self._pid(d)
        if run.returncode != 0 or pid is None:
            tail = (run.stdout + run.stderr)[-2000:].strip()
            raise ProviderError(f"QEMU failed to start instance {iid} ({run.returncode}): {tail}")

    def reboot(self, provider_ref: str) -> None:
        """Power-cycle the VM: stop it (bounded) and start it again with the same disk, seed
        and identity; the console keeps both boots, a line marking where one ends."""
        d = self.instance_dir(provider_ref)
        try:
            args = json.loads((d / "qemu.argv").read_text())
        except FileNotFoundError:
            raise NotFoundError(f"instance {provider_ref} has no VM on this platform") from None
        with _locked(d):
            pid = self._pid(d)
            if pid is not None and not qemu_vm.stop(pid, provider_ref, self.config.stop_timeout):
                raise ProviderError(f"QEMU pid {pid} of instance {provider_ref} did not stop")
            with contextlib.suppress(FileNotFoundError):
                (d / "qemu.pid").unlink()
            with (d / "console.log").open("a") as f:
                f.write("\npowernode-platform: power cycle (reboot) of this instance\n")
            self._launch(d, args)
        log.info("instance %s: rebooted, QEMU pid %s", provider_ref, self._pid(d))

    def _format_persist(self, request: ProvisionRequest, d: Path, disk: Path) -> str:
        """The persist disk, formatted with the first module set's store in it (when the
        request has a set); returns that set's ``modules.set`` text ("" for none)."""
        with disk.open("wb") as f:
            f.truncate(self.config.persist_disk_mb << 20)
        tree = d / "persist-tree"
        modules_set, n = "", 0
        if request.modules and self.config.boot_store is not None:
            modules_set, n = boot_set.write_persist_tree(
                request.modules, self.config.boot_store, tree
            )
        argv = ["mkfs.ext4", "-q", "-F", "-b", "4096", "-O", "verity", "-L", PERSIST_LABEL]
        argv += ["-U", request.instance_id, "-E", "root_owner=0:0"]
        if n:
            argv += ["-d", str(tree)]
        try:
            mkfs = subprocess.run(
                [*argv, str(disk)], capture_output=True, text=True, check=False, timeout=600
            )
        finally:
            shutil.rmtree(tree, ignore_errors=True)
        if mkfs.returncode != 0:
            raise ProviderError(f"mkfs.ext4 of {disk} failed: {mkfs.stderr.strip()}")
        if n:
            log.info("instance %s: first module set, %d file(s) on its persist disk",
                     request.instance_id, n)  # fmt: skip
        return modules_set

    def _pid(self, d: Path) -> int | None:
        try:
            return int((d / "qemu.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def _cleanup(self, d: Path, *, keep_console: bool) -> None:
        pid = self._pid(d)
        if pid is not None:
            qemu_vm.stop(pid, d.name, self.config.stop_timeout)
        names = ["qemu.pid", "persist.raw", "seed.tar", "qemu.argv"]
        shutil.rmtree(d / "persist-tree", ignore_errors=True)
        if not keep_console:
            names += ["console.log", "qemu.log", "claim"]
        for n in names:
            with contextlib.suppress(FileNotFoundError):
                (d / n).unlink()
        if not keep_console:
            with contextlib.suppress(OSError):
                d.rmdir()

    def terminate(self, provider_ref: str) -> None:
        """Stop the VM (SIGTERM, then SIGKILL, bounded) and remove its disk; keep the console."""
        d = self.instance_dir(provider_ref)
        if not d.is_dir():
            return
        with _locked(d):
            pid = self._pid(d)
            if pid is not None and not qemu_vm.stop(pid, provider_ref, self.config.stop_timeout):
                raise ProviderError(f"QEMU pid {pid} of instance {provider_ref} did not stop")
            self._cleanup(d, keep_console=True)

    def is_running(self, provider_ref: str) -> bool | None:
        d = self.instance_dir(provider_ref)
        pid = self._pid(d)
        return pid is not None and qemu_vm.names_instance(pid, provider_ref)

    def pid(self, provider_ref: str) -> int | None:
        """The live VM's pid, or None."""
        pid = self._pid(self.instance_dir(provider_ref))
        return pid if pid is not None and qemu_vm.names_instance(pid, provider_ref) else None

    def console(self, provider_ref: str, max_bytes: int) -> bytes | None:
        """The last ``max_bytes`` of the serial console (capped at 1 MiB)."""
        path = self.console_path(provider_ref)
        if not path.is_file():
            raise NotFoundError(f"instance {provider_ref} has no console log on this platform")
        n = max(0, min(max_bytes, _MAX_CONSOLE_BYTES))
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - n))
            return f.read(n)
