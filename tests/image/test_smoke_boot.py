"""The first real boot (`make smoke`, also in `make test`): power-on to ``drift: false``.

kernel-initrd is built; ``system-base`` and the userland module ``hello`` are built by
the module toolchain, pushed and signed into a real registry, ingested and verified by the
platform, which runs on PostgreSQL with ``provider = "qemu"`` (tests/image/smoke.py). An
instance is provisioned through the API, and from then on only the API is read:

1. first boot: the console's phases, ``instance.enrolled``, a heartbeat,
   ``running_module_digests`` equal to the desired set, ``drift: false``;
1b. a new version of ``hello`` is published and promoted to live: the node pulls it from
   the registry (as 10.0.2.2), verifies it under the module's key, restacks its root and
   reports it, without a reboot (no ``/init`` on the console, no ``instance.rebooted``);
2. reboot (``POST …/reboot``, a power cycle): the same identity (no second enrollment),
   the set composed from the persist store's last good set, a new heartbeat, drift false;
3. a seed bundle whose token was used: a second machine handed the first one's token says
   so on its console, and the platform records ``instance.enroll_refused``;
4. terminate: the VM is gone, the console still readable.

Each phase prints its time after provisioning (``-s`` shows them; the CI log keeps them).
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from powernode.platform.services.boot_set import BootModule
from powernode.platform.services.providers import ProvisionRequest
from tests.conftest import require_tool
from tests.image.smoke import (
    Smoke,
    Watch,
    build_hello,
    build_system_base,
    smoke_platform,
    watch_boot,
)
from tests.package_cache import EPOCH, session_cache
from tests.platform import pgcluster

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.slow,
    pytest.mark.tool,
    pytest.mark.postgres,
    pytest.mark.registry,
]

BOOT_BUDGET = 900.0  # s: TCG on a loaded 2-core host; fs-verity over ~180 MB, python's imports
CONVERGE_BUDGET = 600.0  # s: the agent's 60 s sync, a pull over user networking, a restack


@pytest.fixture(scope="module")
def system_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built system-base artifact (``POWERNODE_SMOKE_SYSTEM_BASE``: one built already,
    by this fixture or ``powernode module build``, to iterate on the boot alone)."""
    given = os.environ.get("POWERNODE_SMOKE_SYSTEM_BASE")
    if given:
        return Path(given)
    require_tool("mmdebstrap")
    work = tmp_path_factory.mktemp("system-base")
    return build_system_base(work, session_cache(tmp_path_factory), EPOCH)


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    bindir = pgcluster.find_bindir()
    if bindir is None:
        pytest.fail("PostgreSQL is not installed (scripts/install-system-deps.sh installs it)")
    with pgcluster.temp_cluster(bindir) as server:
        yield pgcluster.create_database(server, f"pn_smoke_{os.getpid()}")


@pytest.fixture
def smoke(tmp_path: Path, kernel_initrd: Path, system_base: Path, pg_url: str) -> Iterator[Smoke]:
    for tool in ("qemu-system-x86_64", "mkfs.ext4", "docker-registry"):
        require_tool(tool)
    hello = build_hello(tmp_path, "1.0.0", EPOCH)
    with smoke_platform(tmp_path, kernel_initrd, system_base, pg_url, userland=hello) as s:
        yield s


@pytest.mark.timeout(3600)  # the system-base build and four TCG boots
def test_a_node_boots_reboots_and_terminates_watched_from_the_platform(
    smoke: Smoke, capsys: pytest.CaptureFixture[str]
) -> None:
    with capsys.disabled():  # the phases go to the run's log (CI's too), pass or fail
        _smoke(smoke)


def _smoke(smoke: Smoke) -> None:
    api = smoke.api
    api.ok("POST", "/nodes", json={"hostname": "smoke-1", "node_template_id": "base"})
    watch = Watch(time.monotonic(), "smoke boot 1")
    iid = api.ok("POST", "/node_instances", json={"node_id": "smoke-1"})["instance"]["id"]
    inst = watch_boot(smoke, iid, watch, budget=BOOT_BUDGET)
    print("smoke: console (last 4 KiB):\n" + watch.console[-4096:], flush=True)
    assert "drift false" in watch.seen, (
        f"phases seen {watch.seen}; instance {inst}; console tail:\n{watch.console[-4000:]}"
    )
    assert {"instance.enrolled", "first heartbeat", "running = desired"} <= set(watch.seen)
    assert f"powernode: identity {iid} from " in watch.console
    assert "powernode: verity: enabled " in watch.console  # every object, in the guest
    assert set(smoke.desired) == {"system-base", "hello"}

    # 1b. a new version of the userland module: pulled, verified, restacked, no reboot
    first_hello = smoke.desired["hello"]
    promoted_at = datetime.now(UTC)
    offset = len(watch.console.encode())
    smoke.publish(build_hello(smoke.store.parent.parent, "1.1.0", EPOCH))
    assert smoke.desired["hello"] != first_hello
    moved = Watch(time.monotonic(), "smoke converge")
    inst = watch_boot(
        smoke, iid, moved, budget=CONVERGE_BUDGET, console_from=offset, heartbeat_since=promoted_at
    )
    after = moved.console[offset:]
    assert "drift false" in moved.seen, f"phases {moved.seen}; {inst}; console:\n{after[-4000:]}"
    assert inst["running_module_digests"]["hello"] == smoke.desired["hello"]
    assert "powernode: initramfs /init" not in after, "the node rebooted to converge"
    assert not api.events(iid, "instance.rebooted")
    # system-base was checked for the restack by the kernel's fs-verity measurements (no
    # 175 MB re-read under TCG), hello's new image pulled with fs-verity enabled
    kept = re.search(
        r"system-base sha256:\w+ verified: (\d+) objects, 0 re-hashed, (\d+) measured", after
    )
    assert kept and kept.group(1) == kept.group(2), after[-4000:]
    synced = [e for e in api.events(iid, "module.synced") if "hello" in json.dumps(e)]
    assert synced, "no module.synced event names hello"
    print(f"smoke converge: module.synced {json.dumps(synced[-1])[:600]}", flush=True)

    # 2. reboot: the same identity and set, from the persist store, without enrolling again
    rebooted_at = datetime.now(UTC)
    offset = len(watch.console.encode())
    api.ok("POST", f"/node_instances/{iid}/reboot")
    again = Watch(time.monotonic(), "smoke reboot")
    inst = watch_boot(
        smoke, iid, again, budget=BOOT_BUDGET, console_from=offset, heartbeat_since=rebooted_at
    )
    second = again.console[offset:]
    assert "drift false" in again.seen, f"phases {again.seen}; console:\n{second[-4000:]}"
    assert "power cycle (reboot)" in again.console
    assert f"powernode: identity {iid} from " in second
    assert "module set: the persist store's last good set" in second, second[-4000:]
    assert "verity: enabled 0, already " in second  # kept on the persist disk
    assert inst["running_module_digests"] == smoke.desired  # hello 1.1.0 came back
    assert len(api.events(iid, "instance.enrolled")) == 1  # its certificate was kept
    assert api.events(iid, "instance.rebooted")

    # 3. a used token in a seed bundle: refused, on the console and as a platform event
    with smoke.engine.connect() as c:
        from sqlalchemy import text

        used = c.execute(text("SELECT count(*) FROM bootstrap_tokens WHERE used_at IS NOT NULL"))
        assert used.scalar_one() >= 1
    stranger = str(uuid.uuid4())
    token = _seed_token(smoke, iid)
    first_set = (BootModule("system-base", 10, smoke.digest),)  # in the boot store
    smoke.provider.provision(
        ProvisionRequest(stranger, "smoke-x", "smoke-x", "base", token, first_set)
    )
    deadline = time.monotonic() + BOOT_BUDGET
    console = ""
    while time.monotonic() < deadline and "refused to start" not in console:
        console = (smoke.provider.console(stranger, 1 << 20) or b"").decode(errors="replace")
        time.sleep(2)
    print("smoke: used token console tail:\n" + console[-1500:], flush=True)
    assert "enrollment refused" in console and "refused to start" in console, console[-3000:]
    refused = api.events(iid, "instance.enroll_refused")
    assert refused, "no instance.enroll_refused event on the token's instance"
    smoke.provider.terminate(stranger)

    # 4. terminate: the VM stops, its console stays readable
    assert smoke.provider.pid(iid) is not None
    done = api.ok("POST", f"/node_instances/{iid}/terminate")["instance"]
    assert done["status"] == "terminated"
    assert smoke.provider.pid(iid) is None
    assert "powernode-agent boot:" in api.console(iid)


def _seed_token(smoke: Smoke, iid: str) -> str:
    """The bootstrap token the instance's seed bundle carried (used by its enrollment)."""
    import io
    import tarfile

    seed = smoke.provider.instance_dir(iid) / "seed.tar"
    with tarfile.open(fileobj=io.BytesIO(seed.read_bytes())) as tar:
        f = tar.extractfile("bootstrap-token")
        assert f is not None
        return f.read().decode().strip()
