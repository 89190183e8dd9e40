"""``powernode-agent boot`` (agent/boot.py): the first boot after switch_root.

Against the real platform over TLS (tests.platform.nodeapi.realplatform): the
claimed identity enrolls with the seed's token; a used token and a token from
another platform are refused, said on the console, recorded by the platform
(``instance.enroll_refused``), and nothing is written on the node. The mounted
set is recorded only when a real powernode union (an overlay, marker
``mount``) is on the root.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from powernode.agent.assemble import node_layout
from powernode.agent.boot import BootError, first_boot, read_boot_set, read_claim
from powernode.agent.config import load_config
from powernode.agent.modules.state import ModuleSpec
from powernode.agent.modules.status import running_module_digests
from powernode.agent.modules.union import UNION_SOURCE
from powernode.image.bootlayout import render_module_set
from powernode.platform.db import FleetEvent
from tests.conftest import require_root
from tests.platform.nodeapi.realplatform import RealPlatform, real_platform

HEX_A, HEX_B = "a" * 64, "b" * 64


def _node(tmp: Path, iid: str, token: str, url: str, ca: Path, *, seed_iid: str = "") -> Path:
    """claim dir (identity, boot.set) and seed dir, as 90powernode leaves them."""
    claim, seed = tmp / "run-powernode", tmp / "seed"
    claim.mkdir(parents=True)
    seed.mkdir(parents=True)
    (claim / "identity").write_text(f"instance_id={iid}\nsource=fwcfg\n")
    specs = [
        ModuleSpec("system-base", f"sha256:{HEX_A}", 10),
        ModuleSpec("app", f"sha256:{HEX_B}", 20),
    ]
    (claim / "boot.set").write_text(render_module_set(specs))
    doc = {"format": "powernode-seed/1", "instance_id": seed_iid or iid, "platform_url": url}
    (seed / "seed.json").write_text(json.dumps(doc))
    (seed / "bootstrap-token").write_text(token + "\n")
    (seed / "platform-ca.pem").write_bytes(ca.read_bytes())
    return tmp


@pytest.fixture
def union_root(tmp_path: Path) -> Iterator[Path]:
    """A real overlay named like the agent's unions, on a fresh root directory."""
    require_root()
    root, lower, upper, work = (tmp_path / n for n in ("root", "lower", "upper", "work"))
    for d in (root, lower, upper, work):
        d.mkdir()
    opts = f"lowerdir={lower},upperdir={upper},workdir={work}"
    subprocess.run(["mount", "-t", "overlay", UNION_SOURCE, "-o", opts, str(root)], check=True)
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def _fleet(platform: RealPlatform, iid: str) -> list[FleetEvent]:
    """Every fleet event of the instance (the platform's own, not only the agent's)."""
    with Session(platform.engine) as s:
        return list(s.scalars(select(FleetEvent).where(FleetEvent.instance_id == iid)))


def _cfg(tmp: Path, root: Path):
    return load_config(None, None, state_dir=tmp / "state", modules_root=root)


def _images(tmp: Path) -> None:
    images = tmp / "state" / "images"
    images.mkdir(parents=True)
    for h in (HEX_A, HEX_B):
        (images / f"{h}.cfs").write_bytes(b"x")


@pytest.mark.mount
def test_first_boot_enrolls_records_the_mounted_set_and_a_used_token_is_refused(
    tmp_path: Path, union_root: Path
) -> None:
    with real_platform(tmp_path / "platform") as platform:
        iid = platform.instance("boot-1")
        token = platform.token(iid)
        node = _node(tmp_path / "n1", iid, token, platform.url, platform.ca_file)
        _images(node)
        lines: list[str] = []
        cfg = _cfg(node, union_root)
        report = first_boot(
            cfg,
            node_layout(cfg),
            lines.append,
            claim_dir=node / "run-powernode",
            seed_dir=node / "seed",
        )
        assert (report.instance_id, report.source, report.enrolled) == (iid, "fwcfg", "now")
        assert report.platform_url == platform.url
        assert lines[0] == f"identity {iid} (claimed by the initramfs from fwcfg)"
        assert f"enrolled as instance {iid}" in lines[1]
        assert lines[2].startswith("root verified: app@bbbbbbbbbbbb system-base@aaaaaaaaaaaa")
        # what the first heartbeat reports
        assert running_module_digests(node_layout(cfg)) == {
            "system-base": f"sha256:{HEX_A}",
            "app": f"sha256:{HEX_B}",
        }
        assert "instance.enrolled" in [e.kind for e in _fleet(platform, iid)]
        # a reboot: the certificate is on the persist partition; no token is needed
        again = first_boot(
            cfg,
            node_layout(cfg),
            lines.append,
            claim_dir=node / "run-powernode",
            seed_dir=node / "seed",
        )
        assert again.enrolled == "already"
        # the same seed on another (fresh) node: the token is single use
        other = _node(tmp_path / "n2", iid, token, platform.url, platform.ca_file)
        cfg2 = _cfg(other, union_root)
        with pytest.raises(BootError, match=r"enrollment refused: .*already used"):
            first_boot(
                cfg2,
                node_layout(cfg2),
                lines.append,
                claim_dir=other / "run-powernode",
                seed_dir=other / "seed",
            )
        assert not (other / "state" / "pki" / "cert.pem").exists()
        refused = [e for e in _fleet(platform, iid) if e.kind == "instance.enroll_refused"]
        assert len(refused) == 1 and "already used" in refused[0].payload["reason"]


def test_a_foreign_seed_is_said_on_the_console_and_recorded_by_the_platform(
    tmp_path: Path,
) -> None:
    with real_platform(tmp_path / "platform") as platform:
        iid = platform.instance("boot-foreign")
        foreign = str(uuid.uuid4())  # a seed made by another platform for its own instance
        node = _node(
            tmp_path / "n",
            iid,
            "pnb_from_elsewhere",
            platform.url,
            platform.ca_file,
            seed_iid=foreign,
        )
        lines: list[str] = []
        cfg = _cfg(node, tmp_path / "root")
        with pytest.raises(BootError, match=r"enrollment refused: .*bootstrap token unknown"):
            first_boot(
                cfg,
                node_layout(cfg),
                lines.append,
                claim_dir=node / "run-powernode",
                seed_dir=node / "seed",
            )
        assert f"the seed bundle is for instance {foreign}, this node claimed {iid}" in lines[1]
        refused = [e for e in _fleet(platform, iid) if e.kind == "instance.enroll_refused"]
        assert len(refused) == 1 and "unknown" in refused[0].payload["reason"]
        assert not (node / "state" / "pki" / "cert.pem").exists()


@pytest.mark.parametrize(
    ("identity", "message"),
    [
        (None, r"claimed identity: .* is missing"),
        ("instance_id=not-a-uuid\n", "names no instance UUID"),
    ],
)
def test_a_missing_or_bad_claim_stops_the_boot(
    tmp_path: Path, identity: str | None, message: str
) -> None:
    if identity is not None:
        (tmp_path / "identity").write_text(identity)
    with pytest.raises(BootError, match=message):
        read_claim(tmp_path)


def test_a_bad_boot_set_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "boot.set"
    f.write_text("# header\n10 base " + HEX_A + "\n")
    assert read_boot_set(f)["base"].digest == f"sha256:{HEX_A}"
    for text, msg in (
        ("10 base zz\n", "not '<priority> <name> <hex>'"),
        (f"10 a {HEX_A}\n20 a {HEX_B}\n", "module a twice"),
        ("# only a header\n", "names no module"),
    ):
        f.write_text(text)
        with pytest.raises(BootError, match=msg):
            read_boot_set(f)


def test_no_union_on_the_root_records_nothing(tmp_path: Path) -> None:
    from powernode.agent.boot import record_mounted

    cfg = _cfg(tmp_path, tmp_path / "plain")
    (tmp_path / "plain").mkdir()
    with pytest.raises(BootError, match="is not a powernode union"):
        record_mounted(node_layout(cfg), {"a": ModuleSpec("a", f"sha256:{HEX_A}", 1)})
    assert not os.path.exists(tmp_path / "state" / "agent" / "state.json")


def test_the_seed_bundle_names_the_registry_the_node_pulls_from(tmp_path: Path) -> None:
    """The qemu provider writes ``modules_registry`` (the host's registry as the guest dials
    it); ``read_seed`` hands it on, and refuses anything but http(s)://host[:port]."""
    from powernode.agent.boot import read_seed
    from powernode.platform.services.seed_bundle import Seed

    iid = str(uuid.uuid4())
    seed = Seed(
        iid, "https://10.0.2.2:8443", "", "pnb_x", "", "http://10.0.2.2:5000", "127.0.0.1:5000"
    )
    doc = json.loads(seed.manifest())
    (tmp_path / "seed.json").write_text(seed.manifest())
    got = read_seed(tmp_path)
    assert (got.modules_registry, got.modules_registry_name) == (
        "http://10.0.2.2:5000",
        "127.0.0.1:5000",
    )
    for bad in ("http://127.0.0.1:5000", "127.0.0.1:5000/x"):
        (tmp_path / "seed.json").write_text(json.dumps({**doc, "modules_registry_name": bad}))
        with pytest.raises(BootError, match=r"modules_registry_name .* is not host\[:port\]"):
            read_seed(tmp_path)
    lone = {k: v for k, v in doc.items() if k != "modules_registry"}  # a name, no registry
    (tmp_path / "seed.json").write_text(json.dumps(lone))
    with pytest.raises(BootError, match="beside a modules_registry"):
        read_seed(tmp_path)
    del doc["modules_registry"], doc["modules_registry_name"]  # an older bundle: none
    (tmp_path / "seed.json").write_text(json.dumps(doc))
    assert read_seed(tmp_path).modules_registry == ""
    for bad in ("10.0.2.2:5000", "http://10.0.2.2:5000/v2/", "file:///srv/registry", 5000):
        (tmp_path / "seed.json").write_text(json.dumps({**doc, "modules_registry": bad}))
        with pytest.raises(BootError, match=r"modules_registry .* is not http\(s\)://host"):
            read_seed(tmp_path)
