"""QEMU fw-cfg source: ``-fw_cfg name=opt/com.powernode/instance_uuid,string=<uuid>``.

The guest driver ``qemu_fw_cfg`` exposes items under
/sys/firmware/qemu_fw_cfg/by_name/<name>/raw (QEMU docs/specs/fw_cfg.rst,
Linux drivers/firmware/qemu_fw_cfg.c). The top directory appears as soon as
the module loads, even without a device; ``by_name/`` only after a probe,
so that is what we test. A ``string=`` blob has no trailing NUL and a
``file=`` blob keeps the file's newline, so the value is stripped.
"""

from __future__ import annotations

from powernode.agent.identity.model import Outcome
from powernode.agent.identity.source import ProbeContext, SourceMiss, read_host_text
from powernode.agent.identity.validate import InvalidIdentifier, parse_uuid

FW_CFG_DIR = "/sys/firmware/qemu_fw_cfg"
ITEM_NAME = "opt/com.powernode/instance_uuid"
MAX_ITEM_BYTES = 1024


class FwCfgSource:
    name = "fwcfg"

    def probe(self, ctx: ProbeContext) -> tuple[str, str]:
        if ctx.in_container:
            raise SourceMiss(
                Outcome.SKIPPED, "in a container: /sys/firmware belongs to the host, not to us"
            )
        top = ctx.path(FW_CFG_DIR)
        by_name = top / "by_name"
        if not by_name.is_dir():
            if top.is_dir():
                why = "driver loaded but no fw-cfg device found (not a QEMU VM?)"
            else:
                why = "qemu_fw_cfg driver not loaded (not QEMU, or run `modprobe qemu_fw_cfg`)"
            raise SourceMiss(Outcome.ABSENT, f"{by_name}: missing; {why}")
        raw_path = by_name / ITEM_NAME / "raw"
        text = read_host_text(raw_path, MAX_ITEM_BYTES)
        if text is None:
            raise SourceMiss(
                Outcome.ABSENT,
                f"{raw_path}: no such item; start QEMU with -fw_cfg name={ITEM_NAME},string=<uuid>",
            )
        try:
            instance_id = parse_uuid(text.rstrip("\0"), f"fw-cfg item {ITEM_NAME}")
        except InvalidIdentifier as e:
            raise SourceMiss(Outcome.INVALID, str(e)) from e
        return instance_id, f"QEMU fw-cfg item {ITEM_NAME}"
