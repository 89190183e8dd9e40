"""``powernode-agent commit MODULE``: an instance-variety module's persistent changes as a
new version, built with the module toolchain.

What is captured: the persistent upper directory (``modules_upper``) holds
every write the node made through the union. Of it, the paths the module's
``file_spec`` selects minus its ``mask`` (the build filter,
:func:`powernode.toolchain.selection.shipped_paths`) are the module's delta:
files, directories and symlinks changed or made, whiteouts (0/0 character
devices: deleted), opaque directories (``trusted.overlay.opaque``: replaced).
The new version's tree is the attached version's tree (read from the verified
image, each object checked against its digest) with that delta applied; it is
built as any module is (``toolchain.build.build_module``, packages off: the
tree already holds them), so ``file_spec`` and ``mask`` apply again and the
result is reproducible from the same inputs.

Only a module the platform's desired set names as ``instance`` variety (the
agent keeps the facts of those: ``<state>/agent/facts.json``) is committed;
any other is refused and nothing is written. A node without a persistent
upper has nothing to commit: refused likewise.

With a target (``--push oci:DIR:TAG`` or ``registry/repo:tag``), the artifact is
pushed and signed with the node's own key (``<state>/pki/key.pem``, Ed25519),
the signature annotated ``dev.powernode.made-by: node`` and
``dev.powernode.instance: <instance id>`` (from the node's certificate); the
trust policy of node-made versions is the node's public key, printed with the
result (``{"cosign_public_key": …}``), which the platform holds from the
node's enrollment certificate. The push is verified under that policy, then
announced to the platform (``POST /node_api/module_versions``, :func:`announce`)
with a statement signed by the same key (signing/nodecommit.py); the platform
records the version as ``built``, attributed to the instance, after checking
the statement against the key of the certificate the node presented, and that
the module is instance-variety and assigned to the node's template
(platform/services/nodeapi/commits.py). It is never promoted by this.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

from powernode.agent.certstore import CertStore
from powernode.agent.modules.integrity import object_digest_fd, verify_module
from powernode.agent.modules.layout import NodeLayout
from powernode.agent.modules.render import load_facts
from powernode.errors import ConfigError, DataError
from powernode.node.fields import JSON
from powernode.node.records import CommitAnswer, CommitRequest
from powernode.verity.composefs.reader import Entry, EntryType, Image

if TYPE_CHECKING:
    from powernode.agent.transport import NodeClient

_OPAQUE = b"trusted.overlay.opaque"


@dataclass(frozen=True)
class Delta:
    changed: tuple[str, ...]  # absolute paths written from the upper
    deleted: tuple[str, ...]  # whiteouts
    opaque: tuple[str, ...]  # directories replaced

    def to_dict(self) -> dict[str, list[str]]:
        return {
            "changed": list(self.changed),
            "deleted": list(self.deleted),
            "opaque": list(self.opaque),
        }


@dataclass(frozen=True)
class Committed:
    module: str
    version: str
    out: Path
    composefs_digest: str
    delta: Delta

    def to_dict(self) -> dict[str, object]:
        return {
            "module": self.module,
            "version": self.version,
            "out": str(self.out),
            "composefs_digest": self.composefs_digest,
            "delta": self.delta.to_dict(),
        }


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _listed(upper: Path) -> dict[str, os.stat_result]:
    """Every path under ``upper``, as the build lists them (directories end with "/")."""
    out: dict[str, os.stat_result] = {}
    for dirpath, dirnames, filenames in os.walk(upper):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = "/" + str(p.relative_to(upper))
            out[rel + "/" if stat.S_ISDIR(st.st_mode) else rel] = st
    return out


def capture(upper: Path, file_spec: tuple[str, ...], mask: tuple[str, ...]) -> Delta:
    """The module's delta in ``upper``: file_spec minus mask (the build filter)."""
    from powernode.toolchain.selection import shipped_paths  # noqa: PLC0415 - toolchain on use

    listed = _listed(upper)
    chosen = set(shipped_paths(listed, file_spec, mask))
    changed, deleted, opaque = [], [], []
    for rel in sorted(chosen):
        st = listed.get(rel)
        if st is None:
            continue  # a parent the selection added
        path = rel.rstrip("/")
        if _is_whiteout(st):
            deleted.append(path)
        elif stat.S_ISDIR(st.st_mode):
            try:
                if os.getxattr(upper / path.lstrip("/"), _OPAQUE) == b"y":
                    opaque.append(path)
            except OSError:
                pass
        else:
            changed.append(path)
    return Delta(tuple(changed), tuple(deleted), tuple(opaque))


def read_entry(image: Image, e: Entry, objects_dir: Path) -> bytes:
    if e.payload is None:
        return image.read_inline(e) if e.size else b""
    obj = objects_dir / os.fsdecode(e.payload)
    fd = os.open(obj, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if e.digest is None or object_digest_fd(fd, e.size, obj) != e.digest.hex():
            raise DataError(f"{obj}: does not match the image's digest for {e.path_str}")
        os.lseek(fd, 0, os.SEEK_SET)
        data = b""
        while len(data) < e.size and (more := os.read(fd, e.size - len(data))):
            data += more
        return data
    finally:
        os.close(fd)


def extract(image: Image, objects_dir: Path, rootfs: Path) -> None:
    """The image's tree (directories, files, symlinks) written under ``rootfs``."""
    rootfs.mkdir(parents=True)
    for e in image.walk():
        rel = e.path_str.lstrip("/")
        if not rel:
            continue
        dest = rootfs / rel
        if e.type is EntryType.DIR:
            dest.mkdir(mode=0o755)
        elif e.type is EntryType.SYMLINK:
            os.symlink(e.symlink or b"", dest)
        elif e.type is EntryType.FILE:
            dest.write_bytes(read_entry(image, e, objects_dir))
        else:
            continue  # devices, fifos, sockets: not carried into a node-made version
        if e.type is not EntryType.SYMLINK:
            os.chmod(dest, stat.S_IMODE(e.mode))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def apply_delta(upper: Path, delta: Delta, rootfs: Path) -> None:
    for d in delta.opaque:
        target = rootfs / d.lstrip("/")
        _remove(target)
        target.mkdir(parents=True)
    for d in delta.deleted:
        _remove(rootfs / d.lstrip("/"))
    for c in delta.changed:
        src, dest = upper / c.lstrip("/"), rootfs / c.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        _remove(dest)
        shutil.copy2(src, dest, follow_symlinks=False)


def commit(
    layout: NodeLayout, module: str, *, version: str, out: Path, source_date_epoch: int = 0
) -> Committed:
    """Build ``module``'s delta as version ``version`` into the artifact directory ``out``."""
    from powernode.agent.initactions import load_manifest  # noqa: PLC0415
    from powernode.toolchain.build import build_module  # noqa: PLC0415 - toolchain on use

    state = layout.state_file.load()
    spec = state.modules.get(module)
    if spec is None:
        attached = ", ".join(sorted(state.modules)) or "none"
        raise ConfigError(f"module {module!r} is not attached (attached: {attached})")
    if module not in load_facts(layout.agent_dir):
        raise ConfigError(
            f"module {module!r} is not of the instance variety (the platform's desired set "
            "names its variety); only an instance-variety module's changes are committed"
        )
    if layout.upper is None:
        raise ConfigError(
            "no persistent upper (modules_upper): the node's changes live in a tmpfs "
            "and there is nothing to commit"
        )
    manifest = load_manifest(layout, module)
    fs, mk = manifest.get("file_spec"), manifest.get("mask")
    file_spec = tuple(str(p) for p in fs) if isinstance(fs, list) else ()
    mask = tuple(str(p) for p in mk) if isinstance(mk, list) else ()
    upper = layout.upper / "upper"
    delta = capture(upper, file_spec, mask) if upper.is_dir() else Delta((), (), ())
    verified = verify_module(layout.store, module, spec.digest, seals=layout.seals(), deep=False)
    try:
        image = Image.from_bytes(verified.read(), source=str(verified.path))
    finally:
        verified.close()
    with tempfile.TemporaryDirectory(prefix="powernode-commit-") as tmp:
        repo = Path(tmp) / "repo"
        extract(image, layout.store.objects_dir, repo / "rootfs")
        apply_delta(upper, delta, repo / "rootfs")
        # the version is the build's input, never the manifest's (an artifact's config may carry it)
        doc = {k: v for k, v in manifest.items() if k != "version"}
        (repo / "manifest.yaml").write_text(json.dumps(doc, sort_keys=True))
        built = build_module(
            repo, out, version=version, source_date_epoch=source_date_epoch, packages=False
        )
    return Committed(module, built.version, out, built.composefs_digest, delta)


@dataclass(frozen=True)
class Pushed:
    reference: str
    manifest_digest: str
    instance_id: str
    trust_policy: dict[str, str]  # the node-made versions' policy: the node's public key
    pinned: str = ""  # repository@manifest digest, as verified after the push
    manifest: dict[str, object] = field(default_factory=dict)  # the artifact's manifest.json
    file_list: tuple[str, ...] = ()  # every path of the pushed image but /

    def to_dict(self) -> dict[str, object]:
        return {
            "reference": self.reference,
            "manifest_digest": self.manifest_digest,
            "instance_id": self.instance_id,
            "trust_policy": dict(self.trust_policy),
            "pinned": self.pinned,
        }


MADE_BY = "dev.powernode.made-by"
INSTANCE = "dev.powernode.instance"


def push_signed(pki: CertStore, artifact: Path, target: str) -> Pushed:
    """Push ``artifact`` to ``target``, sign it with the node's key (annotated), and verify
    what the target now holds under the node-made policy (the node's public key)."""
    from powernode.agent.modules.trust import PolicyReader  # noqa: PLC0415 - on use
    from powernode.oci.refs import Reference  # noqa: PLC0415 - on use
    from powernode.publish import push_artifact, sign_artifact  # noqa: PLC0415 - on use
    from powernode.publish.target import open_target  # noqa: PLC0415 - on use
    from powernode.publish.verify import verify_artifact  # noqa: PLC0415 - on use
    from powernode.signing import public_key_pem  # noqa: PLC0415 - on use

    creds = pki.load()  # ConfigError when not enrolled: a node-made version names its node
    key = pki.load_key()
    policy = {"cosign_public_key": public_key_pem(key).decode()}
    registry, ref = open_target(target)
    try:
        digest = push_artifact(registry, ref, artifact)
        annotations = {MADE_BY: "node", INSTANCE: creds.info.instance_id}
        sign_artifact(registry, ref, key, annotations=annotations)
        verified = verify_artifact(registry, ref, PolicyReader()(policy, "node-made"))
    finally:
        close = getattr(registry, "close", None)
        if close is not None:
            close()
    pinned = Reference(ref.registry, ref.repository, None, digest)
    return Pushed(
        target,
        str(digest),
        creds.info.instance_id,
        policy,
        pinned=str(pinned),
        manifest=verified.manifest,
        file_list=verified.file_list,
    )


def announcement(pki: CertStore, done: Committed, pushed: Pushed) -> CommitRequest:
    """The body of ``POST /node_api/module_versions``, signed with the node's key
    (the statement of signing/nodecommit.py)."""
    from powernode.signing.nodecommit import CommitStatement  # noqa: PLC0415 - on use

    statement = CommitStatement(
        instance_id=pushed.instance_id,
        module=done.module,
        version=done.version,
        composefs_digest=done.composefs_digest,
        manifest_digest=pushed.manifest_digest,
        reference=pushed.pinned,
        manifest=pushed.manifest,
        file_list=pushed.file_list,
    )
    return CommitRequest.from_json(
        {
            "module": done.module,
            "version": done.version,
            "composefs_digest": done.composefs_digest,
            "manifest_digest": pushed.manifest_digest,
            "reference": pushed.pinned,
            "manifest": cast("JSON", pushed.manifest),
            "file_list": list(pushed.file_list),
            "signature": statement.sign(pki.load_key()),
        },
        "the commit announcement",
    )


def announce(client: NodeClient, request: CommitRequest) -> CommitAnswer:
    """Tell the platform; it records the version as ``built``, attributed to the instance."""
    return client.commit_version(request)
