"""Instance-variety placeholders rendered at attach time into a layer of their own.

A module of the ``instance`` variety declares, in its manifest, the files
whose text carries placeholders::

    "templates": ["/etc/motd", "/etc/app/site.conf"]

Each is an absolute path of a regular file the module ships (UTF-8 text, at
most :data:`MAX_TEMPLATE` bytes). At attach (and every restack after: a
restart, another module's change, new facts) the agent reads each template
from the verified image, its content checked against the image's digest
(an object's fs-verity digest; inline content is covered by the image's),
renders it with :func:`powernode.agent.placeholders.render` from the facts
``GET /node_api/modules`` delivered for the module (the instance's, and the
assignment's metadata) and writes the result, with the template's owner,
mode, times and xattrs, into a *render layer* under the generation's
directory on the private run tmpfs. The union stacks that layer just above
the module's own (so a higher module still wins a path it ships too): the
verified image and the store are never modified. The facts each module was
rendered with are kept at ``<state>/agent/facts.json`` so a restart renders
the same files; new facts restack.

A template naming no fact, not closed, not UTF-8, too large, not a regular
file or missing from the image refuses the module (reason ``placeholder``,
the template's path and the placeholder named): nothing new is mounted, the
union that served keeps serving, and the refusal reaches the platform as
every refusal does (a ``module.refused`` event).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from powernode.agent.beneath import FILE_FLAGS, Beneath
from powernode.agent.modules.integrity import object_digest_fd
from powernode.agent.modules.masks import _apply_meta, _lookup_first, _times
from powernode.agent.modules.refusal import ModuleRefused, Refusal
from powernode.agent.pathcheck import check_node_path, node_path_segments
from powernode.agent.placeholders import render
from powernode.durable import write_json
from powernode.errors import DataError
from powernode.verity.composefs.reader import Entry, EntryType, Image

MAX_TEMPLATES = 256
MAX_TEMPLATE = 1 << 20
FACTS_FILE = "facts.json"

# module -> (template paths, facts): what restack renders for it.
Renders = Mapping[str, tuple[tuple[str, ...], Mapping[str, str]]]


def templates_of(
    manifest: Mapping[str, object] | None, where: str = "templates"
) -> tuple[str, ...]:
    """The manifest's ``templates``, each checked (absolute, normalised); DataError names one."""
    items = (manifest or {}).get("templates") or []
    if not isinstance(items, list) or len(items) > MAX_TEMPLATES:
        raise DataError(f"{where}: a list of at most {MAX_TEMPLATES} absolute paths")
    for i, p in enumerate(items):
        if not isinstance(p, str):
            raise DataError(f"{where}[{i}]: an absolute path")
        check_node_path(p, f"{where}[{i}]")
    return tuple(items)


def load_facts(agent_dir: Path) -> dict[str, dict[str, str]]:
    """The facts each instance-variety module was last rendered with ({} if none)."""
    try:
        doc = json.loads((agent_dir / FACTS_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    if not isinstance(doc, dict):
        return {}
    return {
        str(m): {str(k): str(v) for k, v in f.items()}
        for m, f in doc.items()
        if isinstance(f, dict)
    }


def save_facts(agent_dir: Path, facts: Mapping[str, Mapping[str, str]]) -> None:
    agent_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_json(agent_dir / FACTS_FILE, {m: dict(f) for m, f in facts.items()}, mode=0o600)


def _refuse(module: str, digest: str, path: str, detail: str) -> ModuleRefused:
    return ModuleRefused([Refusal(module, digest, "placeholder", detail, path)])


def _read(image: Image, entry: Entry, objects_dir: Path, where: str) -> bytes:
    if entry.size > MAX_TEMPLATE:
        raise DataError(f"{where}: {entry.size} bytes, more than a template's {MAX_TEMPLATE}")
    if entry.payload is None:
        return image.read_inline(entry) if entry.size else b""
    obj = objects_dir / os.fsdecode(entry.payload)
    fd = os.open(obj, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        got = object_digest_fd(fd, entry.size, obj)
        if entry.digest is None or got != entry.digest.hex():
            raise DataError(f"{where}: object {entry.object} does not match the image's digest")
        os.lseek(fd, 0, os.SEEK_SET)
        data = b""
        while len(data) < entry.size and (more := os.read(fd, entry.size - len(data))):
            data += more
        return data
    finally:
        os.close(fd)


def build_render_layer(
    target: Path,
    module: str,
    digest: str,
    *,
    image: Image,
    objects_dir: Path,
    templates: Sequence[str],
    facts: Mapping[str, str],
) -> None:
    """Write each of ``templates`` rendered from ``facts`` under ``target``; ModuleRefused."""
    rendered: list[tuple[str, Entry, bytes]] = []
    for path in templates:
        where = f"module {module}: template {path}"
        try:
            entry = image.lookup(path)
        except FileNotFoundError:
            raise _refuse(module, digest, path, f"{where}: not in the module's image") from None
        if entry.type is not EntryType.FILE:
            raise _refuse(module, digest, path, f"{where}: not a regular file")
        try:
            text = _read(image, entry, objects_dir, where).decode()
            out = render(text, facts, where).encode()
        except UnicodeDecodeError:
            raise _refuse(module, digest, path, f"{where}: not UTF-8 text") from None
        except (DataError, OSError) as e:
            raise _refuse(module, digest, path, str(e)) from e
        rendered.append(("/".join(node_path_segments(path)), entry, out))
    target.mkdir(parents=True)
    images = [(module, image)]
    made: list[tuple[str, Entry]] = []

    def make_dir(parent: int, name: str, rel: str) -> None:
        os.mkdir(name, dir_fd=parent)
        found = _lookup_first(images, rel)
        if found is not None and found.type is EntryType.DIR:
            _apply_meta(parent, name, found)
            made.append((rel, found))

    with Beneath(target) as layer:
        for rel, entry, data in rendered:
            with layer.parent(rel, make=make_dir) as (parent, name):
                fd = os.open(name, FILE_FLAGS, 0o600, dir_fd=parent)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                finally:
                    os.close(fd)
                _apply_meta(parent, name, entry)
                _times(parent, name, entry)
        for rel, meta in reversed(made):
            with layer.parent(rel) as (parent, name):
                _times(parent, name, meta)
