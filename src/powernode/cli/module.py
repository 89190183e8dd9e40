"""`powernode module …` commands.

The commands live in small files by concern; each file has a ``register(app)``
that adds its commands. Each is imported when its command runs: the help
strings here are what ``powernode module --help`` shows without importing
them (tests/cli/test_lazy_imports.py checks they match the commands' own).
"""

from __future__ import annotations

from powernode.cli.base import App

app = App(help="Author, validate, compose and inspect modules.")

_COMMANDS = {
    "validate": (
        "module_manifest",
        "Check manifests offline; report every problem with file:line:column.",
    ),
    "schema": (
        "module_manifest",
        "Print the manifest JSON Schema (draft 2020-12) for editors and CI.",
    ),
    "compose": (
        "module_compose",
        "Compose module repos into a template: stack order, winners, masks, conflicts.",
    ),
    "inspect": (
        "module_inspect",
        "List an image's files: path, type, mode, owner, size and backing object.",
    ),
    "push": (
        "module_publish",
        "Push an artifact directory as one OCI manifest (like `oras push`).",
    ),
    "pull": (
        "module_publish",
        "Pull into a shared store, fetching only missing objects; verifies every digest.",
    ),
    "sign": (
        "module_publish",
        "Sign with a cosign key; the signature goes under the sha256-<hex>.sig tag.",
    ),
    "verify": (
        "module_publish",
        "Verify the signature (key or certificate identity) and the artifact's content.",
    ),
    "generate-key-pair": (
        "module_publish",
        "Write cosign.key (encrypted) and cosign.pub to the current directory.",
    ),
    "build": (
        "module_build",
        "Build an artifact: packages + rootfs/, filtered by file_spec/mask, reproducibly.",
    ),
    "init": ("module_init", "Write a new module repo that validates and builds as it is."),
}
for _name, (_module, _help) in _COMMANDS.items():
    app.add_lazy(_name, f"powernode.cli.{_module}:register", _help)
