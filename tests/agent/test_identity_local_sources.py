"""Sources read from the host: QEMU fw-cfg, DMI, KubeVirt, vSphere, identity.cfg."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from powernode.agent.identity import (
    CommandResult,
    IdentityConfig,
    IdentityFileError,
    Outcome,
    write_identity_file,
)
from powernode.agent.identity.cascade import SOURCES
from powernode.agent.identity.local import parse_identity_cfg
from powernode.agent.identity.source import ProbeContext, SourceMiss
from powernode.agent.identity.validate import InvalidIdentifier
from tests.agent.metadata_servers import FakeHost

ID = "6b1a24a1-4061-4607-8bf4-a3963d0c5895"
VMWARE_SERIAL = "VMware-42 1f 24 5c 7f a8 60 fa-6a f6 a4 63 51 ce d0 eb"
VMWARE_BIOS_UUID = "421f245c-7fa8-60fa-6af6-a46351ced0eb"
CFG = "/persist/var/lib/powernode/identity.cfg"


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path / "root")


def probe(host: FakeHost, name: str, in_container: bool = False, **kw: Any) -> tuple[str, str]:
    config = IdentityConfig(root=host.root, in_container=in_container, **kw)
    return SOURCES[name].probe(ProbeContext(config, in_container, network_deadline=0.0))


def miss(host: FakeHost, name: str, **kw: Any) -> SourceMiss:
    with pytest.raises(SourceMiss) as info:
        probe(host, name, **kw)
    return info.value


# -- QEMU fw-cfg ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "blob",
    [ID.encode(), (ID + "\n").encode(), ID.upper().encode() + b"\0"],
    ids=["string=", "file=-with-newline", "uppercase-nul"],
)
def test_fwcfg_reads_the_item(host: FakeHost, blob: bytes) -> None:
    host.fwcfg(blob)
    assert probe(host, "fwcfg") == (ID, "QEMU fw-cfg item opt/com.powernode/instance_uuid")


def test_fwcfg_driver_loaded_without_device(host: FakeHost) -> None:
    host.write("/sys/firmware/qemu_fw_cfg/rev", "3\n")
    m = miss(host, "fwcfg")
    assert m.outcome is Outcome.ABSENT
    assert "driver loaded but no fw-cfg device" in m.reason


def test_fwcfg_no_driver(host: FakeHost) -> None:
    m = miss(host, "fwcfg")
    assert m.outcome is Outcome.ABSENT
    assert "modprobe qemu_fw_cfg" in m.reason


def test_fwcfg_other_items_only(host: FakeHost) -> None:
    host.write("/sys/firmware/qemu_fw_cfg/by_name/opt/org.other/x/raw", "1")
    m = miss(host, "fwcfg")
    assert m.outcome is Outcome.ABSENT
    assert "-fw_cfg name=opt/com.powernode/instance_uuid,string=<uuid>" in m.reason


@pytest.mark.parametrize(
    ("blob", "message"),
    [(b"hello", "is not a UUID"), (b"\xff\xfe", "not UTF-8"), (b"x" * 2000, "larger than 1024")],
    ids=["not-uuid", "binary", "oversized"],
)
def test_fwcfg_bad_item(host: FakeHost, blob: bytes, message: str) -> None:
    host.fwcfg(blob)
    m = miss(host, "fwcfg")
    assert m.outcome is Outcome.INVALID
    assert message in m.reason


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads mode-0400 files anyway")
def test_fwcfg_unreadable_item_is_an_error(host: FakeHost) -> None:
    host.fwcfg(ID)
    raw = host.root / "sys/firmware/qemu_fw_cfg/by_name/opt/com.powernode/instance_uuid/raw"
    raw.chmod(0)
    m = miss(host, "fwcfg")
    assert m.outcome is Outcome.ERROR
    assert "permission denied" in m.reason


def test_fwcfg_skipped_in_a_container(host: FakeHost) -> None:
    host.fwcfg(ID)
    m = miss(host, "fwcfg", in_container=True)
    assert m.outcome is Outcome.SKIPPED


# -- DMI ------------------------------------------------------------------------------------


def test_dmi_product_uuid(host: FakeHost) -> None:
    host.dmi(product_uuid=ID.upper())
    assert probe(host, "dmi")[0] == ID


@pytest.mark.parametrize(
    "value",
    [
        "03000200-0400-0500-0006-000700080009",
        "00020003-0004-0005-0006-000700080009",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
        "Not Specified",
    ],
    ids=["ami", "ami-swapped", "all-ff", "text"],
)
def test_dmi_placeholders_refused(host: FakeHost, value: str) -> None:
    host.dmi(product_uuid=value)
    assert miss(host, "dmi").outcome is Outcome.INVALID


def test_dmi_dir_without_product_uuid_explains_the_hidden_nil(host: FakeHost) -> None:
    host.dmi(sys_vendor="QEMU")
    m = miss(host, "dmi")
    assert m.outcome is Outcome.ABSENT
    assert "all-00/all-FF" in m.reason


def test_no_dmi_falls_back_to_device_tree(host: FakeHost) -> None:
    host.write("/proc/device-tree/vm,uuid", ID + "\0")
    instance_id, detail = probe(host, "dmi")
    assert instance_id == ID
    assert "device-tree" in detail


def test_no_dmi_at_all(host: FakeHost) -> None:
    m = miss(host, "dmi")
    assert m.outcome is Outcome.ABSENT
    assert "no DMI on this machine" in m.reason


def test_dmi_skipped_in_a_container(host: FakeHost) -> None:
    host.dmi(product_uuid=ID)
    m = miss(host, "dmi", in_container=True)
    assert m.outcome is Outcome.SKIPPED
    assert "describes the host" in m.reason


# -- KubeVirt --------------------------------------------------------------------------------


def test_kubevirt_firmware_uuid(host: FakeHost) -> None:
    host.dmi(sys_vendor="KubeVirt", product_name="None", product_uuid=ID)
    instance_id, detail = probe(host, "kubevirt")
    assert instance_id == ID
    assert "firmware.uuid" in detail


def test_kubevirt_needs_its_vendor(host: FakeHost) -> None:
    host.dmi(sys_vendor="QEMU", product_uuid=ID)
    assert miss(host, "kubevirt").outcome is Outcome.SKIPPED


def test_kubevirt_without_uuid(host: FakeHost) -> None:
    host.dmi(sys_vendor="KubeVirt")
    assert miss(host, "kubevirt").outcome is Outcome.ABSENT


# -- vSphere ----------------------------------------------------------------------------------


class FakeTools:
    """vmware-rpctool / vmtoolsd as a command runner: answers from a dict of guestinfo keys."""

    def __init__(
        self,
        keys: dict[str, str],
        installed: Sequence[str] = ("vmware-rpctool", "vmtoolsd"),
        rpctool_denied: bool = False,
    ) -> None:
        self.keys = keys
        self.installed = installed
        self.rpctool_denied = rpctool_denied
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], timeout: float) -> CommandResult:
        self.calls.append(list(argv))
        tool = argv[0]
        if tool not in self.installed:
            return CommandResult(127, "", f"{tool}: command not found")
        if tool == "vmware-rpctool" and self.rpctool_denied:
            return CommandResult(1, "", "Permission denied")
        command = argv[-1]
        key = command.removeprefix("info-get ")
        if key in self.keys:
            return CommandResult(0, self.keys[key] + "\n", "")
        return CommandResult(1, "", "No value found")


def test_vsphere_guestinfo_key(host: FakeHost) -> None:
    host.dmi(sys_vendor="VMware, Inc.")
    tools = FakeTools({"guestinfo.powernode.instance_id": ID})
    instance_id, detail = probe(host, "vsphere", run_command=tools)
    assert instance_id == ID
    assert tools.calls == [["vmware-rpctool", "info-get guestinfo.powernode.instance_id"]]
    assert "vmware-rpctool" in detail


def test_vsphere_rpctool_denied_falls_back_to_vmtoolsd(host: FakeHost) -> None:
    host.dmi(sys_vendor="VMware, Inc.")
    tools = FakeTools({"guestinfo.powernode.instance_id": ID}, rpctool_denied=True)
    assert probe(host, "vsphere", run_command=tools)[0] == ID
    assert tools.calls[1] == ["vmtoolsd", "--cmd", "info-get guestinfo.powernode.instance_id"]


def test_vsphere_without_key_uses_the_serial_not_the_swapped_uuid(host: FakeHost) -> None:
    # HW13+: product_uuid shows the first three fields swapped; the serial is the truth.
    host.dmi(
        sys_vendor="VMware, Inc.",
        product_serial=VMWARE_SERIAL,
        product_uuid="5c241f42-a87f-fa60-6af6-a46351ced0eb",
    )
    instance_id, detail = probe(host, "vsphere", run_command=FakeTools({}))
    assert instance_id == VMWARE_BIOS_UUID
    assert "not set" in detail


def test_vsphere_without_tools_or_serial(host: FakeHost) -> None:
    host.dmi(sys_vendor="VMware, Inc.")
    m = miss(host, "vsphere", run_command=FakeTools({}, installed=()))
    assert m.outcome is Outcome.ABSENT
    assert "vmware-rpctool not installed" in m.reason
    assert "product_serial does not exist" in m.reason


def test_vsphere_bad_guestinfo_value(host: FakeHost) -> None:
    host.dmi(product_name="VMware Virtual Platform")
    m = miss(host, "vsphere", run_command=FakeTools({"guestinfo.powernode.instance_id": "x"}))
    assert m.outcome is Outcome.INVALID


def test_vsphere_tools_not_run_off_vmware(host: FakeHost) -> None:
    host.dmi(sys_vendor="QEMU")
    tools = FakeTools({"guestinfo.powernode.instance_id": ID})
    assert miss(host, "vsphere", run_command=tools).outcome is Outcome.SKIPPED
    assert tools.calls == []


# -- local identity.cfg ------------------------------------------------------------------------


def test_local_file_key_value(host: FakeHost) -> None:
    host.identity_cfg(f"# comment\n\ninstance_id = {ID}\n")
    assert probe(host, "local") == (ID, f"local file {CFG}")


def test_local_file_bare_uuid(host: FakeHost) -> None:
    host.identity_cfg(ID.upper() + "\n")
    assert probe(host, "local")[0] == ID


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty (power lost"),
        ("# only a comment\n", "empty (power lost"),
        ("instance_id = nope\n", ":1: instance_id 'nope' is not a UUID"),
        (f"instance_id = {ID}\ncolour = blue\n", ":2: unknown key 'colour'"),
        (f"instance_id = {ID}\ninstance_id = {ID}\n", ":2: instance_id given again"),
        ("platform_fingerprint = dmi:x\n", "no instance_id line"),
        (f"{ID}\n{ID}\n", "expected 'key = value'"),
        ("\x00\x00\x00\x00", "control character"),
    ],
    ids=["empty", "comment-only", "bad-id", "unknown-key", "repeated", "no-id", "two-bare", "nul"],
)
def test_local_file_garbled_is_refused_and_kept(host: FakeHost, text: str, message: str) -> None:
    path = host.identity_cfg(text)
    m = miss(host, "local")
    assert m.outcome is Outcome.INVALID
    assert message in m.reason
    assert str(path) in m.reason
    assert path.read_text() == text  # never silently regenerated


def test_local_file_fingerprint_change_warns(host: FakeHost) -> None:
    host.identity_cfg(f"instance_id = {ID}\nplatform_fingerprint = dmi:{VMWARE_BIOS_UUID}\n")
    host.dmi(product_uuid="0f0e0d0c-0b0a-0908-0706-050403020100")
    config = IdentityConfig(root=host.root, in_container=False)
    ctx = ProbeContext(config, False, network_deadline=0.0)
    instance_id, detail = SOURCES["local"].probe(ctx)
    assert instance_id == ID
    assert "fingerprint changed" in detail
    assert any("cloned or moved" in w for w in ctx.warnings)


def test_parse_identity_cfg_reports_file_and_line() -> None:
    with pytest.raises(InvalidIdentifier, match=r"^/x/identity.cfg:3: expected 'key = value'"):
        parse_identity_cfg(f"# c\ninstance_id = {ID}\nbroken\n", "/x/identity.cfg")


def test_write_identity_file_then_read_back(tmp_path: Path) -> None:
    path = tmp_path / "persist" / "identity.cfg"
    assert write_identity_file(path, ID.upper(), f"dmi:{VMWARE_BIOS_UUID}") == ID
    assert parse_identity_cfg(path.read_text(), str(path)) == (ID, f"dmi:{VMWARE_BIOS_UUID}")
    assert [p.name for p in path.parent.iterdir()] == ["identity.cfg"]  # no temp left


def test_write_identity_file_first_writer_wins(tmp_path: Path) -> None:
    path = tmp_path / "identity.cfg"
    other = "0f0e0d0c-0b0a-0908-0706-050403020100"
    assert write_identity_file(path, ID) == ID
    before = path.read_bytes()
    assert write_identity_file(path, other) == ID
    assert path.read_bytes() == before


def test_write_identity_file_racing_writers_agree(tmp_path: Path) -> None:
    path = tmp_path / "identity.cfg"
    ids = [f"{i:08x}-4061-4607-8bf4-a3963d0c5895" for i in range(1, 9)]
    got: list[str] = []
    lock = threading.Lock()

    def writer(value: str) -> None:
        result = write_identity_file(path, value)
        with lock:
            got.append(result)

    threads = [threading.Thread(target=writer, args=(v,)) for v in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(got) == len(ids)
    assert len(set(got)) == 1
    assert got[0] in ids
    assert [p.name for p in tmp_path.iterdir()] == ["identity.cfg"]


def test_write_identity_file_refuses_bad_id_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "identity.cfg"
    with pytest.raises(IdentityFileError, match="not written: instance_id 'nope' is not a UUID"):
        write_identity_file(path, "nope")
    assert list(tmp_path.iterdir()) == []


def test_write_identity_file_existing_garbage_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "identity.cfg"
    path.write_text("garbage\n")
    with pytest.raises(IdentityFileError, match="exists but cannot be used"):
        write_identity_file(path, ID)
    assert path.read_text() == "garbage\n"


def test_write_identity_file_refuses_bad_fingerprint(tmp_path: Path) -> None:
    path = tmp_path / "identity.cfg"
    with pytest.raises(IdentityFileError, match="fingerprint"):
        write_identity_file(path, ID, "dmi:x\ninstance_id = 0f0e0d0c-0b0a-0908-0706-050403020100")
    assert list(tmp_path.iterdir()) == []


def test_unreadable_item_is_an_error_not_a_crash(host: FakeHost) -> None:
    # A directory where the file should be: EISDIR, reported like EACCES would be.
    host.write("/sys/firmware/qemu_fw_cfg/by_name/opt/com.powernode/instance_uuid/raw/x", "")
    m = miss(host, "fwcfg")
    assert m.outcome is Outcome.ERROR
    assert "instance_uuid/raw" in m.reason


def test_default_command_runner_maps_missing_tool_to_127(tmp_path: Path) -> None:
    from powernode.agent.identity.config import default_command_runner

    missing = default_command_runner([str(tmp_path / "vmware-rpctool"), "info-get x"], 5.0)
    assert missing.returncode == 127
    assert "command not found" in missing.stderr
    ok = default_command_runner(["sh", "-c", "echo value; echo oops >&2; exit 3"], 5.0)
    assert ok == CommandResult(3, "value\n", "oops\n")
