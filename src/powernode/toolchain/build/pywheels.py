"""Python wheels into a module's root (docs/build.md, "Python wheels").

A module repo may hold ``python-requirements.txt``: pip requirements, every
one pinned with its hashes (``pip install --require-hashes``), the form
``uv pip compile --generate-hashes`` writes. The build may also be handed
local wheels (``--python-wheel``: the project's own, built from a tree).
Both are installed with ``--no-deps`` (the requirements file is the whole
closure) into ``/usr/lib/python3/dist-packages``, the directory Debian's
``python3`` searches, laid between the package tree and ``rootfs/``.

Reproducibility: binary wheels only (``--only-binary :all:``, no build
step), pip's ``direct_url.json`` (it names the build host's path) and its
``bin/`` (scripts whose ``#!`` is the build's interpreter) are dropped;
``console_scripts`` become ``/usr/bin/<name>`` run by ``/usr/bin/python3``;
bytecode is compiled with ``--invalidation-mode unchecked-hash`` (no source
mtime inside; the source paths recorded are the node's), and every mtime
and owner is normalised like ``rootfs/``'s. The build's interpreter must be
the module's ``python3`` minor version (the wheels' tags and the bytecode
depend on it): a mismatch is refused before pip runs.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from collections.abc import Collection, Sequence
from pathlib import Path

from powernode.errors import SourceTreeError

REQUIREMENTS_NAME = "python-requirements.txt"
SITE = "usr/lib/python3/dist-packages"
PYTHON = "/usr/bin/python3"
PIP_TIMEOUT = 900


def wanted(repo: Path, wheels: Sequence[Path]) -> bool:
    """Whether the build has Python wheels to install."""
    return bool(wheels) or (repo / REQUIREMENTS_NAME).is_file()


def check_python(paths: Collection[str]) -> None:
    """The module's package tree must carry this interpreter's ``python3.X``."""
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    if f"/usr/lib/{ver}" not in paths:
        found = sorted(p.rsplit("/", 1)[1] for p in paths if p.startswith("/usr/lib/python3."))
        raise SourceTreeError(
            f"Python wheels need the module's python3 to be {ver} (the build's interpreter): "
            f"the package tree has {', '.join(found) or 'no python3.X'}; add python3 to "
            "package_spec, or build with the matching interpreter"
        )


def _pip(args: Sequence[str], epoch: int) -> None:
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch), "PYTHONHASHSEED": "0"}
    argv = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile",
            "--only-binary", ":all:", "--no-warn-script-location",
            "--disable-pip-version-check", *args]  # fmt: skip
    try:
        subprocess.run(argv, check=True, capture_output=True, env=env, timeout=PIP_TIMEOUT)
    except subprocess.CalledProcessError as e:
        tail = e.stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise SourceTreeError("pip install failed: " + " / ".join(tail)) from e
    except subprocess.TimeoutExpired as e:
        raise SourceTreeError(f"pip install did not finish in {PIP_TIMEOUT} s") from e


def install(repo: Path, wheels: Sequence[Path], dest: Path, *, epoch: int) -> None:
    """Install the repo's locked requirements and ``wheels`` into ``dest`` laid as a root."""
    for w in wheels:
        if not (w.is_file() and w.name.endswith(".whl")):
            raise SourceTreeError(f"{w}: not a wheel file (*.whl)")
    site = dest / SITE
    site.mkdir(parents=True)
    req = repo / REQUIREMENTS_NAME
    if req.is_file():
        _pip(["--require-hashes", "--target", str(site), "-r", str(req)], epoch)
    if wheels:
        _pip(["--upgrade", "--target", str(site), *(str(w) for w in wheels)], epoch)
    shutil.rmtree(site / "bin", ignore_errors=True)
    for d in sorted(site.glob("*.dist-info")):
        (d / "direct_url.json").unlink(missing_ok=True)
        _entry_scripts(d, dest / "usr" / "bin")
    for cache in sorted(site.rglob("__pycache__")):
        shutil.rmtree(cache)
    _compile(site, dest, epoch)


def _entry_scripts(dist_info: Path, bindir: Path) -> None:
    eps = dist_info / "entry_points.txt"
    if not eps.is_file():
        return
    cp = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(eps.read_text())
    if not cp.has_section("console_scripts"):
        return
    bindir.mkdir(parents=True, exist_ok=True)
    for name, target in sorted(cp.items("console_scripts")):
        module, _, attr = target.strip().partition(":")
        attr = attr.split("[")[0].strip()
        head = attr.split(".")[0]
        script = bindir / name
        script.write_text(
            f"#!{PYTHON}\nimport sys\nfrom {module.strip()} import {head}\nsys.exit({attr}())\n"
        )
        script.chmod(0o755)


def _compile(site: Path, dest: Path, epoch: int) -> None:
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch), "PYTHONHASHSEED": "0"}
    argv = [sys.executable, "-m", "compileall", "-q", "-j", "1", "--invalidation-mode",
            "unchecked-hash", "-s", str(dest), "-p", "/", str(site)]  # fmt: skip
    # a few wheels ship files that do not compile under this version (templates, py2 leftovers)
    subprocess.run(argv, check=False, capture_output=True, env=env, timeout=PIP_TIMEOUT)
