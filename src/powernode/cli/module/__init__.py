"""`powernode module …` commands.

The commands live in small files by concern; each file has a ``register(app)``
that adds its commands. Each is imported when its command runs: the help
strings here are what ``powernode module --help`` shows without importing
them (tests/cli/test_lazy_imports.py checks they match the commands' own).
"""

from __future__ import annotations

from powernode.cli.base import App, Register

app = App(help="Author, validate, compose and inspect modules.")

# Each loader imports its file when one of its commands runs.


def _manifest() -> Register:
    from powernode.cli.module import manifest as module_manifest  # noqa: PLC0415

    return Register(module_manifest.register)


def _compose() -> Register:
    from powernode.cli.module import compose as module_compose  # noqa: PLC0415

    return Register(module_compose.register)


def _inspect() -> Register:
    from powernode.cli.module import inspect as module_inspect  # noqa: PLC0415

    return Register(module_inspect.register)


def _publish() -> Register:
    from powernode.cli.module import publish as module_publish  # noqa: PLC0415

    return Register(module_publish.register)


def _build() -> Register:
    from powernode.cli.module import build as module_build  # noqa: PLC0415

    return Register(module_build.register)


def _init() -> Register:
    from powernode.cli.module import init as module_init  # noqa: PLC0415

    return Register(module_init.register)


_COMMANDS = {
    "validate": (
        _manifest,
        "Check manifests offline; report every problem with file:line:column.",
    ),
    "schema": (
        _manifest,
        "Print the manifest JSON Schema (draft 2020-12) for editors and CI.",
    ),
    "compose": (
        _compose,
        "Compose module repos into a template: stack order, winners, masks, conflicts.",
    ),
    "inspect": (
        _inspect,
        "List an image's files: path, type, mode, owner, size and backing object.",
    ),
    "push": (
        _publish,
        "Push an artifact directory as one OCI manifest (like `oras push`).",
    ),
    "pull": (
        _publish,
        "Pull into a shared store, fetching only missing objects; verifies every digest.",
    ),
    "sign": (
        _publish,
        "Sign with a cosign key; the signature goes under the sha256-<hex>.sig tag.",
    ),
    "verify": (
        _publish,
        "Verify the signature (key or certificate identity) and the artifact's content.",
    ),
    "generate-key-pair": (
        _publish,
        "Write cosign.key (encrypted) and cosign.pub to the current directory.",
    ),
    "build": (
        _build,
        "Build an artifact: packages + rootfs/, filtered by file_spec/mask, reproducibly.",
    ),
    "init": (_init, "Write a new module repo that validates and builds as it is."),
}
for _name, (_load, _help) in _COMMANDS.items():
    app.add_lazy(_name, _load, _help)
