"""The package path of `module build`: the mmdebstrap tar, its cache, dpkg status, apt sources.

The fast tests feed hand-made tars and files; the ``slow``/``tool`` ones run a
real mmdebstrap of ``hello`` once per session (shared through the cache).
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from powernode.errors import ConfigError, DataError, SourceTreeError
from powernode.run import run
from powernode.toolchain.build import build_module
from powernode.toolchain.build.dpkg import parse_status
from powernode.toolchain.build.entries import Entry, check_parents, merge
from powernode.toolchain.build.failure import explain_failure
from powernode.toolchain.build.packages import host_arch, install_tree, read_members
from powernode.toolchain.build.sources import read_sources
from powernode.toolchain.sbom import Package, purl
from tests.conftest import require_tool
from tests.package_cache import package_cache
from tests.toolchain.test_build import EPOCH, artifact_bytes, image_entries, leftovers, make_repo

SOURCES = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
"""


def _tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> tarfile.TarFile:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            t.addfile(info, io.BytesIO(data) if info.isreg() else None)
    buf.seek(0)
    return tarfile.open(fileobj=buf, mode="r:")


def _info(name: str, kind: bytes = tarfile.REGTYPE, **kw: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    for k, v in kw.items():
        setattr(info, k, v)
    return info


def test_sources_are_read_from_apt(tmp_path: Path) -> None:
    (tmp_path / "etc/apt/sources.list.d").mkdir(parents=True)
    (tmp_path / "etc/apt/sources.list.d/debian.sources").write_text(SOURCES)
    src = read_sources(tmp_path, None)
    assert src.suite == "bookworm"
    assert src.lines == (
        "deb http://deb.debian.org/debian bookworm main non-free-firmware",
        "deb http://deb.debian.org/debian bookworm-updates main non-free-firmware",
        "deb http://deb.debian.org/debian-security bookworm-security main non-free-firmware",
    )
    mirrored = read_sources(tmp_path, "http://127.0.0.1:3142/debian")
    assert mirrored.lines == ("deb http://127.0.0.1:3142/debian bookworm main non-free-firmware",)
    with pytest.raises(ConfigError, match="--mirror 'x y' is not an http"):
        read_sources(tmp_path, "x y")
    with pytest.raises(ConfigError, match=r"cannot read the apt sources.*pass --mirror"):
        read_sources(tmp_path / "nothing", None)


def test_dpkg_status_lists_installed_packages_only() -> None:
    text = (
        "Package: hello\nStatus: install ok installed\nVersion: 2.10-3\nArchitecture: amd64\n\n"
        "Package: gone\nStatus: deinstall ok config-files\nVersion: 1\nArchitecture: amd64\n\n"
        "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9+deb12u10\n"
        "Architecture: amd64\nDescription: GNU C Library\n multi-line continuation\n"
    )
    pkgs = parse_status(text, "status")
    assert [p.pin for p in pkgs] == ["hello=2.10-3", "libc6=2.36-9+deb12u10"]


@given(st.text(max_size=300))
def test_dpkg_status_parser_never_crashes(text: str) -> None:
    try:
        pkgs = parse_status(text, "status")
    except DataError as e:
        assert "status" in str(e)
    except ConfigError as e:
        assert "status:" in str(e)
    else:
        assert all(p.name and p.version for p in pkgs)


def test_purl_encodes_epoch_and_plus() -> None:
    pkg = Package("libc6", "1:2.36-9+deb12u10", "amd64")
    assert purl(pkg, "bookworm") == (
        "pkg:deb/debian/libc6@1%3A2.36-9%2Bdeb12u10?arch=amd64&distro=bookworm"
    )


@pytest.mark.parametrize("name", ["../etc/passwd", "/etc/passwd", "./usr/../../x"])
def test_tar_member_escaping_the_root_is_refused(name: str) -> None:
    tar = _tar([(_info("./", tarfile.DIRTYPE), b""), (_info(name), b"x")])
    with pytest.raises(SourceTreeError, match="escapes the tree root"):
        read_members(tar, "pkg.tar", EPOCH)


def test_tar_members_become_entries_clamped_and_hardlinks_resolved() -> None:
    tar = _tar(
        [
            (_info(".", tarfile.DIRTYPE, mtime=EPOCH + 50), b""),
            (_info("./usr/", tarfile.DIRTYPE), b""),
            (_info("./usr/a", uid=7, gid=8, mtime=EPOCH - 5), b"a" * 100),
            (_info("./usr/b", tarfile.LNKTYPE, linkname="./usr/a"), b""),
            (_info("./usr/l", tarfile.SYMTYPE, linkname="/etc/shadow"), b""),
        ]
    )
    entries, members = read_members(tar, "pkg.tar", EPOCH)
    by = {e.path: e for e in entries}
    assert sorted(by) == ["/", "/usr", "/usr/a", "/usr/b", "/usr/l"]
    assert by["/"].mtime == EPOCH and by["/usr/a"].mtime == EPOCH - 5
    assert (by["/usr/a"].uid, by["/usr/a"].gid, by["/usr/b"].size) == (7, 8, 100)
    assert by["/usr/l"].target == b"/etc/shadow" and "/usr/l" not in members


def _entry(path: str, mode: int, origin: str = "packages", target: bytes | None = None) -> Entry:
    return Entry(path, mode, 0, 0, EPOCH, 0, origin, f"{origin}:{path}", target)  # type: ignore[arg-type]


def test_rootfs_directory_over_a_package_symlink_is_refused() -> None:
    base = [_entry("/", 0o40755), _entry("/bin", 0o120777, target=b"usr/bin")]
    overlay = [_entry("/", 0o40755, "rootfs"), _entry("/bin", 0o40755, "rootfs")]
    with pytest.raises(SourceTreeError, match="/bin in the package tree is a symlink"):
        merge(base, overlay)


def test_rootfs_file_replaces_a_package_directory_and_hides_its_children() -> None:
    base = [_entry("/", 0o40755), _entry("/etc", 0o40755), _entry("/etc/x", 0o100644)]
    overlay = [_entry("/", 0o40755, "rootfs"), _entry("/etc", 0o100644, "rootfs")]
    merged = merge(base, overlay)
    assert [(e.path, e.origin) for e in merged] == [("/", "packages"), ("/etc", "rootfs")]
    check_parents(merged)
    with pytest.raises(SourceTreeError, match="resolves through a symlink"):
        check_parents(
            [_entry("/", 0o40755), _entry("/l", 0o120777, target=b"/"), _entry("/l/x", 0o100644)]
        )


def test_missing_package_is_named() -> None:
    stderr = "I: x\nE: Unable to locate package no-such-pkg\nE: apt download failed\n"
    err = explain_failure(25, stderr, ["hello", "no-such-pkg"])
    assert "could not install package_spec no-such-pkg" in str(err)


# --- real mmdebstrap ---------------------------------------------------------------

HELLO = """\
schema_version: 1
name: hello
package_spec: [hello]
file_spec: ["/usr/bin/hello", "/usr/share/doc/hello/**", "/etc/hello/**"]
"""


@pytest.fixture(scope="session")
def hello_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One mmdebstrap of hello per session; every real-package test reuses it."""
    require_tool("mmdebstrap")
    cache = package_cache(tmp_path_factory.mktemp("mmdebstrap-cache"))
    repo = make_repo(tmp_path_factory.mktemp("warm") / "repo", {}, HELLO)
    res = build_module(
        repo, repo.parent / "out", version="1.0.0", source_date_epoch=EPOCH, cache_dir=cache
    )
    assert not res.cached
    return cache


@pytest.mark.slow
@pytest.mark.tool
def test_hello_builds_reproducibly_from_the_cache(tmp_path: Path, hello_cache: Path) -> None:
    files = {"etc/hello/hello.conf": b"greeting=hi\n"}
    a = make_repo(tmp_path / "a", files, HELLO, seed=1, mtime=EPOCH + 10)
    b = make_repo(tmp_path / "b", files, HELLO, seed=2, mtime=EPOCH - 10)
    kw = {"version": "1.0.0", "source_date_epoch": EPOCH, "cache_dir": hello_cache}
    ra = build_module(a, tmp_path / "out-a", **kw)  # type: ignore[arg-type]
    rb = build_module(b, tmp_path / "x" / "out-b", **kw)  # type: ignore[arg-type]
    assert ra.cached and rb.cached
    assert artifact_bytes(tmp_path / "out-a") == artifact_bytes(tmp_path / "x" / "out-b")
    assert any(p.startswith("hello=") for p in ra.packages) and "libc6" in " ".join(ra.packages)
    out = tmp_path / "out-a"
    assert (out / "package-list.txt").read_text().splitlines() == list(ra.packages)
    entries = image_entries(out / "image.cfs")
    assert entries["/usr/bin/hello"].mode & 0o777 == 0o755 and entries["/usr/bin/hello"].object
    assert "/usr/lib" not in entries  # not selected by file_spec
    assert all(e.mtime[0] <= EPOCH for e in entries.values())
    doc = json.loads((out / "module.json").read_bytes())
    assert doc["package_source"]["tool"] == "mmdebstrap" and doc["packages"] == list(ra.packages)
    sbom = json.loads((out / "sbom.cdx.json").read_bytes())
    purls = [c["purl"] for c in sbom["components"] if c["type"] == "library"]
    assert any(p.startswith("pkg:deb/debian/hello@") and "arch=" in p for p in purls)
    assert sbom["specVersion"] == "1.6"
    hello = next(c for c in sbom["components"] if c["name"] == "hello")
    assert hello["purl"].endswith("distro=debian-12")
    # hello's copyright file is free text: no license is claimed for it; packages whose
    # copyright is machine-readable (DEP-5) carry theirs.
    assert "licenses" not in hello
    libs = [c for c in sbom["components"] if c["type"] == "library"]
    assert any(c.get("licenses") for c in libs), [c["name"] for c in libs]
    dry = build_module(a, tmp_path / "dry", dry_run=True, **kw)  # type: ignore[arg-type]
    assert dry.cached and dry.packages == ra.packages


@pytest.mark.slow
@pytest.mark.tool
def test_missing_package_is_named_and_nothing_is_written(tmp_path: Path, hello_cache: Path) -> None:
    manifest = HELLO.replace("[hello]", "[hello, no-such-package-xyz]")
    repo = make_repo(tmp_path / "repo", {}, manifest)
    before = sorted(p.name for p in hello_cache.iterdir())
    with pytest.raises(SourceTreeError, match="could not install package_spec no-such-package-xyz"):
        build_module(
            repo, tmp_path / "out", version="1.0.0", source_date_epoch=EPOCH, cache_dir=hello_cache
        )
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []
    assert sorted(p.name for p in hello_cache.iterdir()) == before


BROKEN_POSTINST = """\
#!/bin/sh
for i in $(seq 1 30); do echo "postinst line $i"; done
echo "cannot reach the license server" >&2
exit 1
"""


@pytest.mark.slow
@pytest.mark.tool
def test_failed_postinst_is_named_with_its_last_lines_and_nothing_is_left(
    tmp_path: Path, hello_cache: Path
) -> None:
    """A real .deb whose postinst fails: the message names it, shows 20 lines, no dpkg argv."""
    require_tool("dpkg-deb")
    pkg = tmp_path / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN/control").write_text(
        "Package: pn-broken\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: powernode tests <tests@example.invalid>\nDescription: fails to configure\n"
    )
    (pkg / "DEBIAN/postinst").write_text(BROKEN_POSTINST)
    (pkg / "DEBIAN/postinst").chmod(0o755)
    deb = tmp_path / "pn-broken_1.0_all.deb"
    run(["dpkg-deb", "--root-owner-group", "--build", pkg, deb])
    tar = tmp_path / "cache" / "key" / "rootfs.tar"
    sources = read_sources(Path("/"), None)
    with pytest.raises(SourceTreeError) as info:
        install_tree([str(deb)], sources, host_arch(), tar, epoch=EPOCH, debs=hello_cache / "debs")
    msg = str(info.value)
    assert "the postinst script of package pn-broken returned error exit status 1" in msg
    shown = [line[4:] for line in msg.splitlines() if line.startswith("  | ")]
    assert shown == [f"postinst line {n}" for n in range(12, 31)] + [
        "cannot reach the license server"
    ]
    assert "/var/cache/apt/archives" not in msg and "apt-get" not in msg
    assert not (tmp_path / "cache" / "key").exists()  # no tar, no temp file, no directory
