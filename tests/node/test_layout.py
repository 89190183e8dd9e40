"""The node's layout: one set of names, the overlay options the agent mounts with, and a
package the agent imports without the platform's dependencies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path, PurePosixPath

from powernode.mount.overlay import Upper, overlay_options
from powernode.node import layout
from powernode.node.layout import NodeLayout, overlay_data
from powernode.node.store import ModuleStore, image_digest


def test_layout_paths_are_relative_to_the_root_and_match_the_store() -> None:
    lay = NodeLayout()
    assert not lay.state.is_absolute()
    assert lay.objects == PurePosixPath("persist/var/lib/powernode/objects")
    assert lay.modules_state == lay.state / "agent" / "modules.json"
    hex64 = "ab" * 32
    assert lay.image(hex64) == lay.images / f"{hex64}.cfs"
    root = Path("/sysroot")
    store = ModuleStore(lay.under(root, lay.state))
    assert store.objects_dir == lay.under(root, lay.objects)
    assert store.image_path(image_digest(hex64)) == lay.under(root, lay.image(hex64))


def test_overlay_options_are_the_layouts() -> None:
    lowers = [Path("/run/gen-1/mask"), Path("/run/gen-1/layers/base")]
    upper = Upper(Path("/run/upper/upper"), Path("/run/upper/work-1"))
    data = overlay_options(lowers, [Path("/s/objects")], upper=upper, verity="on")
    assert data == (
        "lowerdir=/run/gen-1/mask:/run/gen-1/layers/base::/s/objects,metacopy=on,"
        "redirect_dir=on,verity=on,upperdir=/run/upper/upper,workdir=/run/upper/work-1"
    )
    assert data == overlay_data(
        [str(p) for p in lowers],
        ["/s/objects"],
        upper=("/run/upper/upper", "/run/upper/work-1"),
        verity="on",
    )
    assert layout.run_tmpfs_options("10%") == "size=10%,mode=700"


def test_node_imports_nothing_of_the_platform() -> None:
    code = (
        "import sys; import powernode.node.records, powernode.node.store, powernode.node.layout; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'pydantic', 'fastapi', 'sqlalchemy', 'httpx', 'starlette'}), "
        "sorted(m for m in sys.modules if m.startswith(('powernode.platform', 'powernode.agent'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] []"
