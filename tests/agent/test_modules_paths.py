"""Issue 13, item 7: the agent checks every path it receives and makes files beneath its root.

Regression for "a ``composition.dropped`` entry ``/../../…/X`` made ``modules
sync`` create a device node outside its run directory, as root". The pure
checks run everywhere; the ``modules sync`` cases (mark ``mount``) run the
real command against a desired file whose composition carries the bad path
(or a symlink from an image), and check nothing was made outside the
state directory, nothing was mounted and no state was written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from powernode.agent.beneath import Beneath
from powernode.agent.modules.desired import parse_desired
from powernode.agent.modules.layout import NodeLayout
from powernode.agent.modules.state import ModuleSpec
from powernode.agent.pathcheck import MAX_NAME, MAX_PATH, check_node_path
from powernode.cli.agent import app
from powernode.core.composition import Composition, Dropped, StackedModule, UnionEntry
from powernode.core.priority import Variety
from powernode.errors import DataError
from tests.agent.test_modules_support import big, build_module, cleaned, mounts_under

LONG = "/" + "/".join(["d" * 200] * 21)  # 4,221 bytes
BAD = [
    ("/../../../../../../../../../../../../../../tmp/X", "'..' segment"),
    ("/etc/../../X", "'..' segment"),
    ("/etc/./x", "'.' segment"),
    ("//etc/x", "empty segment"),
    ("/etc//x", "empty segment"),
    ("etc/x", "not absolute"),
    ("", "not absolute"),
    ("/etc/x\0y", "NUL"),
    (LONG, f"over the {MAX_PATH}-byte limit"),
    ("/etc/" + "n" * (MAX_NAME + 1), f"segment over {MAX_NAME} bytes"),
]
BAD_IDS = ["dotdot-escape", "dotdot-inner", "dot", "leading-empty", "inner-empty",
           "relative", "empty", "nul", "too-long", "long-segment"]  # fmt: skip


@pytest.mark.parametrize(("path", "why"), BAD, ids=BAD_IDS)
def test_bad_paths_refused_naming_the_field(path: str, why: str) -> None:
    with pytest.raises(DataError, match="composition: dropped\\[0\\]\\.path: ") as e:
        check_node_path(path, "composition: dropped[0].path")
    assert why in str(e.value)


@pytest.mark.parametrize(
    ("path", "directory"),
    [("/etc/x", False), ("/", True), ("/etc/", True), ("/a b/ü…/.hidden", False)],
    ids=["file", "root-dir", "dir", "unicode-and-dotfile"],
)
def test_good_paths_pass(path: str, directory: bool) -> None:
    assert check_node_path(path, "f", directory=directory) == path


def test_a_directory_slash_only_where_a_directory_is_meant() -> None:
    with pytest.raises(DataError, match="empty segment"):
        check_node_path("/etc/", "composition: dropped[0].path")


def _composition(dropped_path: str, module: str = "app") -> dict[str, object]:
    comp = Composition(
        (StackedModule(module, 50, Variety.SUBSCRIPTION, None, ()),),
        (UnionEntry("/etc/", (module,)),),
        (Dropped(dropped_path, module, "mask", module, "/etc/**"),),
        (),
    )
    return comp.to_dict()


@pytest.mark.parametrize(("path", "why"), BAD, ids=BAD_IDS)
def test_desired_set_with_a_bad_path_is_refused_whole(path: str, why: str) -> None:
    doc = {"modules": [], "composition": _composition(path)}
    with pytest.raises(DataError) as e:
        parse_desired(doc)
    assert "GET /node_api/modules: composition: dropped[0].path: " in str(e.value)
    assert why in str(e.value)


def test_walk_does_not_follow_a_symlink_planted_inside(tmp_path: Path) -> None:
    root, outside = tmp_path / "run", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside)
    made: list[str] = []

    def make(parent: int, name: str, rel: str) -> None:
        os.mkdir(name, dir_fd=parent)
        made.append(rel)

    with Beneath(root) as b:
        for rel, why in [
            ("link/x", "a symbolic link or not a directory"),
            ("link/sub/x", "a symbolic link or not a directory"),
            ("a/../../x", "not a normalised relative path"),
        ]:
            with pytest.raises(DataError, match=why), b.parent(rel, make=make) as (fd, name):
                os.mknod(name, dir_fd=fd)
        with b.parent("a/b/x", make=make) as (fd, name):
            os.mknod(name, dir_fd=fd)
    assert os.listdir(outside) == []
    assert made == ["a", "a/b"] and (root / "a/b/x").exists()


# -- the real `powernode-agent modules sync` ------------------------------------------------


@pytest.fixture
def lay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NodeLayout]:
    monkeypatch.delenv("POWERNODE_AGENT_CONFIG", raising=False)
    layout = NodeLayout(root=tmp_path / "root", state=tmp_path / "state")
    with cleaned(tmp_path, layout):
        yield layout


def _sync(layout: NodeLayout, doc: dict[str, object]) -> tuple[int, str, str]:
    path = layout.state.parent / "desired.json"
    path.write_text(json.dumps(doc))
    where = ["--state-dir", str(layout.state), "--root", str(layout.root)]
    result = CliRunner().invoke(app, ["modules", "sync", "--desired", str(path), *where])
    return result.exit_code, result.stdout, result.stderr


def _entry(spec: ModuleSpec) -> dict[str, object]:
    return {
        "name": spec.name,
        "version": spec.version,
        "composefs_digest": spec.digest,
        "effective_priority": spec.priority,
    }


@pytest.mark.mount
@pytest.mark.parametrize(("kind", "why"), [
    ("escape", "'..' segment"), ("relative", "not absolute"),
    ("nul", "NUL"), ("too-long", "-byte limit"),
])  # fmt: skip
def test_sync_refuses_a_bad_dropped_path_and_writes_nothing(
    lay: NodeLayout, kind: str, why: str
) -> None:
    outside = lay.state.parent / "outside"
    outside.mkdir()
    # Enough '..' to leave <state>/run/gen-1/mask from any depth, then back down to outside/X.
    path = {
        "escape": "/" + "../" * 40 + str(outside / "X").lstrip("/"),
        "relative": "etc/X",
        "nul": "/etc/X\0",
        "too-long": LONG,
    }[kind]
    spec = build_module(lay, "app", {"etc/app.conf": big("app")}, priority=50)
    doc = {"modules": [_entry(spec)], "composition": _composition(path)}
    code, _, err = _sync(lay, doc)
    assert code == 1, err
    assert "composition: dropped[0].path: " in err and why in err
    assert os.listdir(outside) == []  # main made the whiteout device node here
    assert not lay.state_file.path.exists(), "a refused sync wrote attach state"
    assert mounts_under(lay.state.parent) == []


@pytest.mark.mount
def test_sync_does_not_follow_a_symlink_from_an_image_out_of_the_mask(lay: NodeLayout) -> None:
    # The owner's image ships /etc/link -> <outside>; the composition gives the
    # owner /etc/link (the mask layer copies the symlink) and drops /etc/link/x
    # (a whiteout beneath it). Followed, the whiteout lands in <outside>.
    outside = lay.state.parent / "outside"
    outside.mkdir()
    src = lay.state.parent / "src" / "owner-1.0.0" / "etc"
    src.mkdir(parents=True)
    (src / "link").symlink_to(outside)
    owner = build_module(lay, "owner", {"etc/owned.conf": big("owner")}, priority=10)
    app_ = build_module(lay, "app", {"etc/link": big("app")}, priority=50)
    comp = Composition(
        (
            StackedModule("owner", 10, Variety.SUBSCRIPTION, None, ()),
            StackedModule("app", 50, Variety.SUBSCRIPTION, None, ()),
        ),
        (
            UnionEntry("/etc/", ("app", "owner")),
            UnionEntry("/etc/link", ("owner",)),
            UnionEntry("/etc/owned.conf", ("owner",)),
        ),
        (
            Dropped("/etc/link", "app", "protected", "owner", "/etc/link"),
            Dropped("/etc/link/x", "app", "mask", "app", "/etc/link/**"),
        ),
        (),
    )
    doc = {"modules": [_entry(owner), _entry(app_)], "composition": comp.to_dict()}
    code, _, err = _sync(lay, doc)
    assert os.listdir(outside) == []
    assert code == 1, err
    assert "a symbolic link or not a directory" in err and "etc/link" in err
    assert not (lay.root / "etc").exists()  # nothing mounted


# -- a reference naming a local directory --------------------------------------------------

DIGEST = "sha256:" + "a" * 64


def test_desired_reference_naming_a_directory_is_refused() -> None:
    # oci:5000/acme/x:1 is also host:port/repository:tag, so the reference parser takes it.
    entry = {"name": "x", "composefs_digest": DIGEST, "effective_priority": 1,
             "reference": "oci:5000/acme/x:1"}  # fmt: skip
    with pytest.raises(DataError, match=r"modules\[0\]: desired module x: field 'reference'"):
        parse_desired({"modules": [entry]})


def test_puller_never_opens_a_directory_the_platform_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from powernode.agent.modules.reconcile import DesiredModule, PublishPuller

    monkeypatch.chdir(tmp_path)
    module = DesiredModule("x", "1", DIGEST, 1, "oci:5000/acme/x:1")
    layout = NodeLayout(root=tmp_path / "root", state=tmp_path / "state")
    with pytest.raises(DataError, match="names a local directory"):
        PublishPuller(unsafe_no_signature=True).pull(module, layout)
    assert os.listdir(tmp_path) == []  # main made 5000/acme/x/{oci-layout,index.json,blobs}
