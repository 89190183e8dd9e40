"""The seed bundle: what a new machine is handed to find and join the platform.

A POSIX tar (the 90powernode initramfs unpacks it with busybox ``tar`` and
binds it at ``/etc/powernode/seed`` in the composed root), handed over
fw-cfg as ``opt/com.powernode/seed.tar`` (docs/qemu-provider.md)::

    seed.json         {"format": "powernode-seed/1", "instance_id", "platform_url"
                      [, "modules_registry": the registry URL the node pulls modules from,
                       "modules_registry_name": its host[:port] as signatures name it]}
    platform-ca.pem   the CA the agent pins for the platform's TLS (absent: plain HTTP)
    bootstrap-token   the single-use enrollment token (pnb_…), for
                      ``powernode-agent enroll --token-file``

    modules.set       the first module set (the qemu provider: its images and objects
                      are on the persist disk it formatted, services/boot_set.py)

The initramfs also reads ``store/`` from a bundle when it is there (a bundle
carrying its own store, e.g. over virtio-9p). The archive is byte-identical for
the same input (sorted, owner 0:0, mtime 0).
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass

SEED_FORMAT = "powernode-seed/1"


@dataclass(frozen=True)
class Seed:
    instance_id: str
    platform_url: str
    ca_pem: str
    bootstrap_token: str
    modules_set: str = ""  # render_module_set's text; empty: none
    modules_registry: str = ""  # http(s)://host[:port] as the node dials it; empty: none
    modules_registry_name: str = ""  # its host[:port] as signatures name it, when different

    def manifest(self) -> str:
        body = {
            "format": SEED_FORMAT,
            "instance_id": self.instance_id,
            "platform_url": self.platform_url,
        }
        if self.modules_registry:
            body["modules_registry"] = self.modules_registry
        if self.modules_registry_name:
            body["modules_registry_name"] = self.modules_registry_name
        return json.dumps(body, indent=1, sort_keys=True) + "\n"

    def to_tar(self) -> bytes:
        files = {
            "seed.json": (self.manifest(), 0o644),
            "bootstrap-token": (self.bootstrap_token + "\n", 0o600),
        }
        if self.ca_pem:
            files["platform-ca.pem"] = (self.ca_pem, 0o644)
        if self.modules_set:
            files["modules.set"] = (self.modules_set, 0o644)
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name in sorted(files):
                text, mode = files[name]
                data = text.encode()
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), mode, 0
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                tar.addfile(info, io.BytesIO(data))
        return out.getvalue()
