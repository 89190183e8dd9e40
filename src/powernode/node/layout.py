"""Where a node keeps its state, and how its module union is mounted: one place.

Everything that reads or writes a node's disk takes its names from here: the
agent (:mod:`powernode.agent.modules`), the puller (:mod:`powernode.publish`)
and the initramfs, which renders these values into its shell constants and so
composes the root exactly as the agent does (docs/artifact.md, "On a node:
the shared store").

Paths in :class:`NodeLayout` are relative to the node's root filesystem (the
real root, before any union is mounted on it); :meth:`NodeLayout.under` makes
them absolute for a given root. The store's three directories are relative
to the state directory::

    <state>/objects/<2hex>/<62hex>    one object store shared by every module
    <state>/images/<64hex>.cfs        composefs images, named by composefs digest
    <state>/blobs/sha256/<64hex>      manifests, module.json, pack indexes, SBOMs
    <state>/agent/modules.json        attach state (what is attached, generation)
    <state>/agent/composition.json    the composition the union follows
    <state>/agent/seals/<64hex>.json  per-boot integrity seals
    <state>/agent/lock                the module lock (flock)
    <state>/pki/                      key.pem, cert.pem, key.next.pem, node-ca.pem, platform-ca.pem
    <state>/spool/events.db           events not yet sent
    <state>/run/                      private tmpfs: gen-<g>/layers/<module>, gen-<g>/union, upper/

The overlay of a generation is mounted with source :data:`UNION_SOURCE`,
``MS_NODEV`` (plus ``MS_RDONLY`` when not writable) and data
``lowerdir=<mask>:<layer>...::<state>/objects`` followed by
:data:`OVERLAY_FIXED_OPTIONS`, ``verity=<on|require>`` unless off, and
``upperdir=,workdir=`` when writable (:func:`overlay_data`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final, Literal

# -- names inside the state directory ------------------------------------------------
OBJECTS_DIR: Final = "objects"
IMAGES_DIR: Final = "images"
BLOBS_DIR: Final = "blobs"
BLOBS_ALGORITHM_DIR: Final = "sha256"  # blobs/sha256/<hex> (image-spec image-layout.md)
IMAGE_SUFFIX: Final = ".cfs"
PARTIAL_PREFIX: Final = ".partial-"  # temporaries live beside their final name
AGENT_DIR: Final = "agent"
MODULES_STATE_FILE: Final = "modules.json"
COMPOSITION_FILE: Final = "composition.json"
SEALS_DIR: Final = "seals"
LOCK_FILE: Final = "lock"
STORE_LOCK_FILE: Final = "store.lock"  # beside LOCK_FILE: pulls share it, gc takes it alone
PKI_DIR: Final = "pki"
SPOOL_FILE: Final = "spool/events.db"
RUN_DIR: Final = "run"

# -- names inside the run tmpfs -------------------------------------------------------
GENERATION_PREFIX: Final = "gen-"  # run/gen-<g>/
LAYERS_DIR: Final = "layers"  # run/gen-<g>/layers/<module>
MASK_DIR: Final = "mask"  # run/gen-<g>/mask
UNION_DIR: Final = "union"  # run/gen-<g>/union (staging, then moved onto the root)
UPPER_BASE_DIR: Final = "upper"  # run/upper/{upper,work-<g>}
UPPER_DIR: Final = "upper"
WORK_PREFIX: Final = "work-"

# -- in an artifact directory (module build --out) ------------------------------------
ARTIFACT_MODULE_JSON: Final = "module.json"
ARTIFACT_IMAGE: Final = "image.cfs"
ARTIFACT_OBJECTS_DIR: Final = "objects"

# -- mounts -----------------------------------------------------------------------------
UNION_SOURCE: Final = "powernode-modules"  # the overlay's source in mountinfo: marks our unions
OVERLAY_FSTYPE: Final = "overlay"
IMAGE_FSTYPE: Final = "erofs"  # composefs images mount read-only, nodev, file-backed
OVERLAY_FIXED_OPTIONS: Final = ("metacopy=on", "redirect_dir=on")
LOWER_SEPARATOR: Final = ":"
DATA_LOWER_SEPARATOR: Final = "::"  # data-only lower layers follow (Linux >= 6.5)
RUN_TMPFS_MODE: Final = "700"
DEFAULT_TMPFS_SIZE: Final = "25%"
# overlayfs splits lowerdir on ':' and options on ',' (Documentation/filesystems/overlayfs.rst)
FORBIDDEN_IN_PATHS: Final = (":", ",", "\\", "\n")

Verity = Literal["off", "on", "require"]

DEFAULT_STATE: Final = PurePosixPath("persist/var/lib/powernode")


def run_tmpfs_options(size: str = DEFAULT_TMPFS_SIZE) -> str:
    """The mount data of the private run tmpfs."""
    return f"size={size},mode={RUN_TMPFS_MODE}"


def overlay_data(
    lowers: Sequence[str],
    data_lowers: Sequence[str] = (),
    *,
    upper: tuple[str, str] | None = None,
    verity: Verity = "off",
) -> str:
    """The overlay mount data string; ``lowers`` highest priority first; ``upper`` (upper, work).

    Paths are taken as given: callers check them against :data:`FORBIDDEN_IN_PATHS`.
    """
    lowerdir = LOWER_SEPARATOR.join(lowers)
    if data_lowers:
        lowerdir += DATA_LOWER_SEPARATOR + DATA_LOWER_SEPARATOR.join(data_lowers)
    opts = [f"lowerdir={lowerdir}", *OVERLAY_FIXED_OPTIONS]
    if verity != "off":
        opts.append(f"verity={verity}")
    if upper is not None:
        opts += [f"upperdir={upper[0]}", f"workdir={upper[1]}"]
    return ",".join(opts)


@dataclass(frozen=True)
class NodeLayout:
    """The node's state paths, relative to its root filesystem (no leading '/')."""

    state: PurePosixPath = DEFAULT_STATE

    @property
    def objects(self) -> PurePosixPath:
        return self.state / OBJECTS_DIR

    @property
    def images(self) -> PurePosixPath:
        return self.state / IMAGES_DIR

    @property
    def blobs(self) -> PurePosixPath:
        return self.state / BLOBS_DIR

    @property
    def agent(self) -> PurePosixPath:
        return self.state / AGENT_DIR

    @property
    def modules_state(self) -> PurePosixPath:
        return self.agent / MODULES_STATE_FILE

    @property
    def composition(self) -> PurePosixPath:
        return self.agent / COMPOSITION_FILE

    @property
    def seals(self) -> PurePosixPath:
        return self.agent / SEALS_DIR

    @property
    def lock(self) -> PurePosixPath:
        return self.agent / LOCK_FILE

    @property
    def pki(self) -> PurePosixPath:
        return self.state / PKI_DIR

    @property
    def spool(self) -> PurePosixPath:
        return self.state / SPOOL_FILE

    @property
    def run(self) -> PurePosixPath:
        return self.state / RUN_DIR

    def image(self, composefs_hex: str) -> PurePosixPath:
        return self.images / f"{composefs_hex}{IMAGE_SUFFIX}"

    def under(self, root: Path, part: PurePosixPath) -> Path:
        """``part`` (one of the paths above) beneath ``root``."""
        return root / part


def image_name(composefs_hex: str) -> str:
    """The file name of an image in ``images/``."""
    return f"{composefs_hex}{IMAGE_SUFFIX}"


def generation_dir(run: Path, generation: int) -> Path:
    return run / f"{GENERATION_PREFIX}{generation}"
