"""``powernode module init NAME``: a new module repo that validates and builds as written.

Writes manifest.yaml (every field, commented), a rootfs/ placeholder the
file_spec selects, a README, and CI workflows that run validate → build →
sign → push on a version tag. GitHub Actions and Gitea Actions read the same
workflow syntax, so both files hold the same text. Nothing is overwritten:
an existing file is an error and nothing is written.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from powernode.errors import ConfigError
from powernode.toolchain.build.output import write_file

Ci = Literal["github", "gitea", "both"]
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")

MANIFEST = """\
# The module's manifest (docs/manifest.md). Check it: powernode module validate .
schema_version: 1
name: {name}
display_name: "{name}"
description: "What {name} adds to a node"
license: "MIT"

# Debian packages mmdebstrap installs before rootfs/ is laid over them.
package_spec: []

# What the artifact ships (rsync-style globs over the packages + rootfs/ tree).
file_spec:
  - "/etc/{name}/**"

# Paths removed from this module's artifact.
mask: []

# Files no other module may ship.
protected_spec: []

dependencies:
  requires: []   # e.g. "powernode/system-base@^1.0"
  provides: []

allow: {{devices: false, setuid: false}}
"""

README = """\
# {name}

A powernode module. Edit `manifest.yaml` and the files under `rootfs/`, then:

    powernode module validate .
    powernode module build . --version 0.1.0 --out dist/{name}

Tag a version (`git tag v0.1.0 && git push --tags`) and CI builds, signs and
pushes `$REGISTRY/{name}:0.1.0` (set the `REGISTRY`, `COSIGN_KEY` and
`COSIGN_PASSWORD` secrets).
"""

WORKFLOW = """\
# Build, sign and push the module when a version tag is pushed.
name: module
on:
  push:
    tags: ["v*"]
jobs:
  publish:
    runs-on: ubuntu-latest
    env:
      REGISTRY: ${{{{ secrets.REGISTRY }}}}
      COSIGN_PASSWORD: ${{{{ secrets.COSIGN_PASSWORD }}}}
    steps:
      - uses: actions/checkout@v4
        with:
          fetch-depth: 0
      - name: validate
        run: powernode module validate .
      - name: build
        run: |
          export SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)
          powernode module build . --version "${{GITHUB_REF_NAME#v}}" --out dist/{name}
      - name: push
        run: powernode module push dist/{name} "$REGISTRY/{name}:${{GITHUB_REF_NAME#v}}"
      - name: sign
        run: |
          printf '%s' "${{{{ secrets.COSIGN_KEY }}}}" > cosign.key
          powernode module sign "$REGISTRY/{name}:${{GITHUB_REF_NAME#v}}" --key cosign.key
          rm -f cosign.key
"""

WORKFLOW_PATHS = {"github": ".github/workflows/module.yml", "gitea": ".gitea/workflows/module.yml"}


def scaffold_files(name: str, ci: Ci = "both") -> dict[str, str]:
    """The files of a new module repo, by relative path."""
    if _SLUG.fullmatch(name) is None:
        raise ConfigError(
            f"module name {name!r} is not a slug: lowercase letters, digits and '-', "
            "starting with a letter or digit, at most 63 characters"
        )
    files = {
        "manifest.yaml": MANIFEST.format(name=name),
        "README.md": README.format(name=name),
        f"rootfs/etc/{name}/README": f"Files under rootfs/ ship as /etc/{name}/… (file_spec).\n",
    }
    for kind in ("github", "gitea"):
        if ci in (kind, "both"):
            files[WORKFLOW_PATHS[kind]] = WORKFLOW.format(name=name)
    return files


def init_module(name: str, directory: Path | None = None, *, ci: Ci = "both") -> list[Path]:
    """Write a new module repo into ``directory`` (default ``./NAME``); returns what it wrote."""
    target = directory if directory is not None else Path(name)
    files = scaffold_files(name, ci)
    clashes = sorted(str(target / rel) for rel in files if (target / rel).exists())
    if clashes:
        raise ConfigError(
            f"{target}: refusing to overwrite {', '.join(clashes)}; choose another --dir"
        )
    written: list[Path] = []
    for rel, text in files.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_file(path, text.encode())
        written.append(path)
    return written
