"""`powernode composefs info ls|objects|dump` and `powernode module inspect`.

The commands are mounted on a bare Typer app through their ``register``
functions, so these tests do not depend on the rest of the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from powernode.cli.composefs import info as composefs_info
from powernode.cli.module import inspect as module_inspect
from powernode.verity.composefs.reader import Image
from powernode.verity.composefs.reader.dump import dump_line, wants_content

TOOL_DIGEST = bytes(range(32))  # the digest sample_tree gives /bin/tool
TOOL_OBJECT = "00/" + TOOL_DIGEST.hex()[2:]


def _app() -> typer.Typer:
    app = typer.Typer()
    composefs_info.register(app)
    module_inspect.register(app)
    return app


APP = _app()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Imported here: tests/composefs/conftest.py supplies an fs-verity stand-in
    # until powernode.verity.fsverity lands, and the writer needs it.
    import tests.composefs.conftest  # noqa: F401
    from powernode.verity.composefs.writer import image_bytes
    from tests.composefs.test_reader import sample_tree

    path = tmp_path_factory.mktemp("cli") / "sample.cfs"
    path.write_bytes(image_bytes(sample_tree()))
    return path


@pytest.fixture(scope="module")
def corrupt(image: Path) -> Path:
    data = bytearray(image.read_bytes())
    data[1024:1028] = b"\0\0\0\0"  # EROFS magic
    path = image.with_name("corrupt.cfs")
    path.write_bytes(bytes(data))
    return path


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(APP, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_info_ls(image: Path) -> None:
    code, out, _ = invoke("info", "ls", str(image))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "/bin/\t"
    assert f"/bin/tool\t@ {TOOL_OBJECT}" in lines
    assert "/etc/a b=c\\n" in lines
    assert not any(line.startswith("/00") for line in lines)


def test_info_ls_raw_shows_root_stubs(image: Path) -> None:
    code, out, _ = invoke("info", "ls", "--raw", str(image))
    assert code == 0
    assert "/00" in out.splitlines()
    assert "/ff" in out.splitlines()


def test_info_objects(image: Path) -> None:
    code, out, _ = invoke("info", "objects", str(image))
    assert (code, out) == (0, TOOL_OBJECT + "\n")


def test_info_dump(image: Path) -> None:
    code, out, _ = invoke("info", "dump", str(image))
    assert code == 0
    img = Image.from_bytes(image.read_bytes())
    expected = [
        dump_line(e, img.read_inline(e) if wants_content(e) else None, img.info_xattrs(e))
        for e in img.walk()
    ]
    assert out.splitlines() == expected
    # composefs-info marks a directory holding whiteouts opaque, as the kernel sees it.
    etc = next(line for line in out.splitlines() if line.startswith("/etc "))
    assert etc.endswith(" trusted.overlay.opaque=x user.overlay.opaque=x")
    assert out.splitlines()[0].startswith("/ 4096 40755 7 0 0 0 1700000000.0 ")


def test_module_inspect_json(image: Path) -> None:
    code, out, _ = invoke("inspect", "--json", str(image))
    assert code == 0
    doc = json.loads(out)
    assert (doc["composefs"], doc["format_version"]) == (True, 1)
    by_path = {e["path"]: e for e in doc["entries"]}
    assert by_path["/bin/tool"]["object"] == TOOL_OBJECT
    assert by_path["/bin/tool"]["digest"] == TOOL_DIGEST.hex()
    assert by_path["/etc/hosts"]["object"] == "inline"
    assert by_path["/etc/hosts"]["xattrs"] == {"user.tag": b"blue".hex()}
    assert by_path["/etc/a b=c\n"]["uid"] == 70000
    assert by_path["/bin/sh"]["symlink"] == "tool"
    assert by_path["/bin/tool2"]["hardlink_to"] == "/bin/tool"
    assert by_path["/dev/null"]["type"] == "char"
    assert by_path["/run/fifo"]["mode"] == "0600"
    assert len(doc["entries"]) == 317


def test_module_inspect_table(image: Path) -> None:
    code, out, _ = invoke("inspect", str(image))
    assert code == 0
    assert "/etc/hosts" in out
    assert "inline" in out
    assert "-rw-r--r--" in out
    assert "70000:1000" in out
    assert "317 entries" in out


@pytest.mark.parametrize(
    "args",
    [("info", "ls"), ("info", "objects"), ("info", "dump"), ("inspect",), ("inspect", "--json")],
    ids=["ls", "objects", "dump", "inspect", "inspect-json"],
)
def test_corrupt_image_is_one_line_and_exit_1(corrupt: Path, args: tuple[str, ...]) -> None:
    before = corrupt.read_bytes()
    code, out, err = invoke(*args, str(corrupt))
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"error: {corrupt}: bad EROFS magic 0x00000000 at byte 1024")
    assert "Traceback" not in err
    assert corrupt.read_bytes() == before


def test_missing_image(tmp_path: Path) -> None:
    code, out, err = invoke("info", "ls", str(tmp_path / "nope.cfs"))
    assert (code, out) == (1, "")
    assert (
        err == f"error: {tmp_path / 'nope.cfs'}: cannot read the image: No such file or directory\n"
    )
