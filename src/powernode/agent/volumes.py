"""``powernode-agent volume-setup``: partition and format the node's disks from a layout.

The layout (JSON, or TOML by suffix)::

    {"disks": [{"device": "/dev/vdb", "partitions": [
        {"name": "persist", "size_mib": 1024, "filesystem": "ext4"},
        {"name": "scratch", "filesystem": "ext4"}]}]}

Each disk gets a GPT whose partitions are named ``powernode-<name>`` (that
name is how a disk made here is recognised); ``size_mib`` omitted means the
rest of the disk (last partition only). Filesystems: ``ext4`` (labelled
``<name>``; the ``persist`` partition always with the ``verity`` feature,
others when ``"verity": true``) or ``swap``.

Idempotent: a disk already laid out as declared is left alone; a partition
of ours with no filesystem yet (an interrupted run) is formatted. Refused,
the disk untouched, unless ``--force``: a disk holding any signature this
did not make (a filesystem, RAID, LVM, another partition table), or a disk
of ours laid out differently (repartitioning destroys its data). ``--force``
wipes the signatures (``wipefs -a``) and lays the disk out anew.

Tools: ``sfdisk`` (package fdisk), ``wipefs``, ``blkid``, ``partx``
(util-linux), ``mkfs.ext4`` (e2fsprogs), ``mkswap``. Where ``/dev`` has no
devtmpfs (a container), partition nodes are made from sysfs (``mknod``).
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from powernode.errors import ConfigError, DataError, PowernodeError
from powernode.run import run

PREFIX = "powernode-"
FILESYSTEMS = ("ext4", "swap")
GPT_TYPES = {  # Linux filesystem data, Linux swap
    "ext4": "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
    "swap": "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
}
NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_SETTLE_TRIES = 100


class DiskRefused(PowernodeError):
    """The disk holds something this did not make; nothing was written."""


@dataclass(frozen=True)
class Partition:
    name: str
    filesystem: str
    size_mib: int | None
    verity: bool


@dataclass(frozen=True)
class Disk:
    device: Path
    partitions: tuple[Partition, ...]


@dataclass
class DiskReport:
    device: str
    action: str  # created | unchanged | formatted
    partitions: list[dict[str, object]] = field(default_factory=list)


def load_layout(path: Path) -> list[Disk]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the layout: {e.strerror}") from e
    try:
        doc = tomllib.loads(raw.decode()) if path.suffix == ".toml" else json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a layout ({e})") from e
    return parse_layout(doc, str(path))


def parse_layout(doc: object, where: str = "layout") -> list[Disk]:
    if not isinstance(doc, dict) or not isinstance(doc.get("disks"), list) or not doc["disks"]:
        raise DataError(f'{where}: expected {{"disks": [ … ]}} with at least one disk')
    disks, seen = [], set()
    for i, d in enumerate(doc["disks"]):
        at = f"{where}: disks[{i}]"
        if not isinstance(d, dict) or not isinstance(d.get("device"), str):
            raise DataError(f"{at}.device: a device path")
        if d["device"] in seen:
            raise DataError(f"{at}.device: {d['device']} is declared twice")
        seen.add(d["device"])
        parts = d.get("partitions")
        if not isinstance(parts, list) or not parts:
            raise DataError(f"{at}.partitions: at least one partition")
        out, names = [], set()
        for j, p in enumerate(parts):
            pat = f"{at}.partitions[{j}]"
            if not isinstance(p, dict):
                raise DataError(f"{pat}: an object")
            name = p.get("name")
            if not isinstance(name, str) or not NAME.match(name) or name in names:
                raise DataError(f"{pat}.name: {name!r} (unique, [a-z][a-z0-9-]{{0,30}})")
            names.add(name)
            fs = p.get("filesystem", "ext4")
            if fs not in FILESYSTEMS:
                raise DataError(f"{pat}.filesystem: {fs!r}, use one of {', '.join(FILESYSTEMS)}")
            size = p.get("size_mib")
            if size is None and j != len(parts) - 1:
                raise DataError(f"{pat}.size_mib: only the last partition may take the rest")
            if size is not None and (
                isinstance(size, bool) or not isinstance(size, int) or size < 1
            ):
                raise DataError(f"{pat}.size_mib: a positive integer")
            verity = bool(p.get("verity", name == "persist"))
            if name == "persist" and (fs != "ext4" or not verity):
                raise DataError(f"{pat}: persist is ext4 with the verity feature")
            out.append(Partition(name, fs, size, verity))
        disks.append(Disk(Path(d["device"]), tuple(out)))
    return disks


def _signatures(device: Path) -> list[str]:
    """What wipefs finds on ``device`` (type@offset), without writing."""
    proc = run(["wipefs", "--no-act", "--json", device], check=False)
    if proc.returncode != 0:
        raise ConfigError(
            f"{device}: wipefs failed: {proc.stderr.decode(errors='replace').strip()}"
        )
    text = proc.stdout.decode().strip()
    if not text:
        return []
    doc = json.loads(text)
    return [f"{s['type']}@{s['offset']}" for s in doc.get("signatures", [])]


def _table(device: Path) -> list[dict[str, object]] | None:
    proc = run(["sfdisk", "--json", device], check=False)
    if proc.returncode != 0:
        return None
    table = json.loads(proc.stdout).get("partitiontable", {})
    if table.get("label") != "gpt":
        return []  # a table, not ours
    parts: list[dict[str, object]] = table.get("partitions", [])
    return parts


def _matches(disk: Disk, parts: list[dict[str, object]]) -> bool:
    if [p.get("name") for p in parts] != [PREFIX + p.name for p in disk.partitions]:
        return False
    for have, want in zip(parts, disk.partitions, strict=True):
        if want.size_mib is not None and int(str(have["size"])) * 512 != want.size_mib << 20:
            return False
    return True


def _partition_node(device: Path, number: int) -> Path:
    """``/dev/<disk>p<n>`` (or ``<disk><n>``), made from sysfs if /dev has no node."""
    base = device.resolve().name
    for _ in range(_SETTLE_TRIES):  # bounded: the kernel adds partitions asynchronously
        for name in (f"{base}p{number}", f"{base}{number}"):
            sys = Path("/sys/class/block") / name
            if sys.exists():
                node = Path("/dev") / name
                if not node.exists():
                    major, minor = map(int, (sys / "dev").read_text().split(":"))
                    os.mknod(node, 0o600 | stat.S_IFBLK, os.makedev(major, minor))
                return node
        run(["partx", "-u", device], check=False)
        time.sleep(0.05)
    raise PowernodeError(f"{device}: partition {number} did not appear")


def _fs_of(node: Path) -> tuple[str, str]:
    proc = run(["blkid", "-p", "-o", "export", node], check=False)
    vals = dict(line.split("=", 1) for line in proc.stdout.decode().splitlines() if "=" in line)
    return vals.get("TYPE", ""), vals.get("LABEL", "")


def _format(node: Path, part: Partition) -> None:
    if part.filesystem == "swap":
        run(["mkswap", "-L", part.name, node])
        return
    # fs-verity on ext4 needs the block size to be the page size (small disks default to 1 KiB)
    features = ["-b", str(os.sysconf("SC_PAGE_SIZE")), "-O", "verity"] if part.verity else []
    run(["mkfs.ext4", "-q", "-F", "-L", part.name, *features, node])


def _describe(node: Path, part: Partition) -> dict[str, object]:
    fs, label = _fs_of(node)
    return {"name": part.name, "device": str(node), "filesystem": fs, "label": label,
            "verity": part.verity}  # fmt: skip


def setup_disk(disk: Disk, *, force: bool = False) -> DiskReport:
    device = disk.device
    try:
        mode = device.stat().st_mode
    except OSError as e:
        raise ConfigError(f"{device}: {e.strerror}") from e
    if not stat.S_ISBLK(mode):
        raise ConfigError(f"{device}: not a block device")
    parts = _table(device)
    ours = bool(parts) and all(str(p.get("name", "")).startswith(PREFIX) for p in parts or [])
    if ours and parts is not None and _matches(disk, parts):
        action = "unchanged"
        described = []
        for i, part in enumerate(disk.partitions, 1):
            node = _partition_node(device, i)
            fs, label = _fs_of(node)
            if not fs:
                _format(node, part)
                action = "formatted"
            elif (fs, label) != (part.filesystem, part.name):
                if not force:
                    raise DiskRefused(
                        f"{node}: partition {part.name} holds {fs or 'something'} "
                        f"labelled {label!r}, not the {part.filesystem} declared; "
                        "pass --force to wipe the disk and lay it out anew"
                    )
                return _create(disk)
            described.append(_describe(node, part))
        return DiskReport(str(device), action, described)
    found = _signatures(device)
    if found or parts is not None:
        what = ", ".join(found) or "a partition table"
        if ours:
            what = f"a powernode layout other than the one declared ({what})"
        if not force:
            raise DiskRefused(
                f"{device}: holds {what} that powernode did not make as declared; nothing "
                "was written. Pass --force to wipe it (its data is lost)"
            )
    return _create(disk, wipe=bool(found) or parts is not None)


def _create(disk: Disk, *, wipe: bool = True) -> DiskReport:
    device = disk.device
    if wipe:
        run(["wipefs", "--all", "--quiet", device])
    lines = ["label: gpt"]
    for p in disk.partitions:
        size = f"size={p.size_mib}MiB, " if p.size_mib is not None else ""
        lines.append(f"{size}type={GPT_TYPES[p.filesystem]}, name={PREFIX}{p.name}")
    run(["sfdisk", "--quiet", "--wipe", "always", "--wipe-partitions", "always", device],
        input=("\n".join(lines) + "\n").encode())  # fmt: skip
    run(["partx", "-u", device], check=False)
    described = []
    for i, part in enumerate(disk.partitions, 1):
        node = _partition_node(device, i)
        _format(node, part)
        described.append(_describe(node, part))
    return DiskReport(str(device), "created", described)


def volume_setup(disks: list[Disk], *, force: bool = False) -> list[DiskReport]:
    """Every disk checked before any is written: one refused disk stops the run untouched."""
    if not force:
        for disk in disks:
            _precheck(disk)
    return [setup_disk(d, force=force) for d in disks]


def _precheck(disk: Disk) -> None:
    parts = _table(disk.device) if disk.device.exists() else None
    if (
        parts is not None
        and parts
        and all(str(p.get("name", "")).startswith(PREFIX) for p in parts)
        and _matches(disk, parts)
    ):
        return
    if not disk.device.exists():
        raise ConfigError(f"{disk.device}: no such device")
    found = _signatures(disk.device)
    if found or parts is not None:
        what = ", ".join(found) or "a partition table"
        raise DiskRefused(
            f"{disk.device}: holds {what} that powernode did not make as declared; nothing "
            "was written. Pass --force to wipe it (its data is lost)"
        )
