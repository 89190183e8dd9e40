"""The module artifact's registry format (docs/artifact.md), as pure functions.

Building and parsing the OCI image manifest, the object-pack index and
``module.json``. Nothing here does I/O: pack/push/pull/verify call these
with bytes and values. Parsing is strict because everything a registry
returns is untrusted: exact media types and layer order, digests and sizes
well-formed and bounded, the index consistent with the pack layers.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from powernode.errors import DataError
from powernode.oci.digest import Digest
from powernode.oci.mediatypes import OCI_MANIFEST

ARTIFACT_TYPE = "application/vnd.powernode.module.v1"
CONFIG_TYPE = "application/vnd.powernode.module.config.v1+json"
IMAGE_TYPE = "application/vnd.powernode.composefs.image.v1"
INDEX_TYPE = "application/vnd.powernode.objects.index.v1+json"
PACK_TYPE = "application/vnd.powernode.objects.pack.v1"
SBOM_TYPE = "application/vnd.cyclonedx+json"

COMPOSEFS_ANNOTATION = "dev.powernode.composefs.digest"
TITLE = "org.opencontainers.image.title"
VERSION = "org.opencontainers.image.version"
CREATED = "org.opencontainers.image.created"

# docs/artifact.md: "A pack holds at most 64 MiB (an object larger than that is a pack alone)".
MAX_PACK_SIZE = 64 << 20

_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class FormatLimits:
    """Bounds on what an untrusted artifact may make a reader fetch or parse."""

    max_config: int = 16 << 20
    max_index: int = 256 << 20
    max_image: int = 1 << 30
    max_sbom: int = 256 << 20
    max_objects: int = 4_000_000
    max_packs: int = 65_536
    max_object: int = 64 << 30


def canonical_json(value: object) -> bytes:
    """Sorted keys, no spaces, UTF-8: the bytes docs/artifact.md calls canonical."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def loads_object(data: bytes, what: str) -> dict[str, Any]:  # Any: JSON
    """A JSON object from untrusted bytes; duplicate keys are refused (ambiguous)."""

    def no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
        out: dict[str, object] = {}
        for k, v in pairs:
            if k in out:
                raise DataError(f"{what}: duplicate key {k!r}")
            out[k] = v
        return out

    try:
        doc = json.loads(data, object_pairs_hook=no_duplicates)
    except (ValueError, RecursionError) as e:
        raise DataError(f"{what}: not valid JSON ({e})") from e
    if not isinstance(doc, dict):
        raise DataError(f"{what}: expected a JSON object, got {type(doc).__name__}")
    return doc


def created_timestamp(source_date_epoch: int) -> str:
    """RFC 3339 UTC from SOURCE_DATE_EPOCH, so rebuilds give byte-identical manifests."""
    when = datetime.datetime.fromtimestamp(source_date_epoch, tz=datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- module.json ---------------------------------------------------------------


@dataclass(frozen=True)
class ModuleConfig:
    """The fields of ``module.json`` that moving and verifying an artifact rely on."""

    name: str
    version: str
    composefs_digest: Digest
    objects: int
    object_bytes: int
    source_date_epoch: int
    document: dict[str, Any] = field(compare=False, repr=False)  # Any: JSON


def parse_module_config(data: bytes, what: str) -> ModuleConfig:
    """Check ``module.json`` (artifact_version 1); raise DataError naming the field."""
    doc = loads_object(data, what)

    def need(name: str, kind: type | tuple[type, ...]) -> Any:  # Any: JSON
        value = doc.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise DataError(f"{what}: field {name!r} is missing or not a {_kind(kind)}")
        return value

    version = doc.get("artifact_version")
    if version != 1:
        raise DataError(
            f"{what}: artifact_version {version!r} is not supported (only 1); "
            "upgrade powernode or rebuild the module"
        )
    digest_text = need("composefs_digest", str)
    try:
        digest = Digest.parse(digest_text)
    except DataError as e:
        raise DataError(f"{what}: field 'composefs_digest': {e}") from e
    counts = {k: need(k, int) for k in ("objects", "object_bytes", "source_date_epoch")}
    for k, v in counts.items():
        if v < 0:
            raise DataError(f"{what}: field {k!r} is negative ({v})")
    manifest = doc.get("manifest")
    if manifest is not None and not isinstance(manifest, dict):
        raise DataError(f"{what}: field 'manifest' is not an object")
    return ModuleConfig(
        name=need("name", str),
        version=need("version", str),
        composefs_digest=digest,
        objects=counts["objects"],
        object_bytes=counts["object_bytes"],
        source_date_epoch=counts["source_date_epoch"],
        document=doc,
    )


def _kind(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(
        {"str": "string", "int": "integer"}.get(k.__name__, k.__name__) for k in kinds
    )


# -- the pack index -------------------------------------------------------------


@dataclass(frozen=True)
class ObjectEntry:
    """Where one object lives: pack number, byte offset and size within the pack."""

    hex: str  # fs-verity sha256 digest, 64 hex; the store name is hex[:2]/hex[2:]
    pack: int
    offset: int
    size: int

    @property
    def name(self) -> str:
        return f"{self.hex[:2]}/{self.hex[2:]}"


@dataclass(frozen=True)
class PackIndex:
    """``{"packs": [<layer digest>…], "objects": [[hex, pack, offset, size], …]}``."""

    packs: tuple[Digest, ...]
    objects: tuple[ObjectEntry, ...]

    def to_bytes(self) -> bytes:
        return canonical_json(
            {
                "objects": [[o.hex, o.pack, o.offset, o.size] for o in self.objects],
                "packs": [str(d) for d in self.packs],
            }
        )


def plan_packs(objects: Sequence[tuple[str, int]]) -> list[list[ObjectEntry]]:
    """Assign objects (``(hex, size)``) to packs: sorted by digest, filled up to 64 MiB.

    Deterministic, so rebuilds give the same packs; an object over the limit
    is a pack alone.
    """
    packs: list[list[ObjectEntry]] = []
    current: list[ObjectEntry] = []
    used = 0
    for hex_, size in sorted(set(objects)):
        if current and used + size > MAX_PACK_SIZE:
            packs.append(current)
            current, used = [], 0
        current.append(ObjectEntry(hex_, len(packs), used, size))
        used += size
    if current:
        packs.append(current)
    return packs


def parse_index(
    data: bytes, pack_sizes: Sequence[tuple[Digest, int]], what: str, limits: FormatLimits
) -> PackIndex:
    """Parse the index and check it against the manifest's pack layers (digest, size).

    Each pack must be exactly its objects concatenated (no gaps, no overlap),
    objects sorted by digest without repeats.
    """
    doc = loads_object(data, what)
    if set(doc) != {"packs", "objects"}:
        raise DataError(f"{what}: expected exactly the fields 'packs' and 'objects'")
    raw_packs, raw_objects = doc["packs"], doc["objects"]
    if not isinstance(raw_packs, list) or not isinstance(raw_objects, list):
        raise DataError(f"{what}: 'packs' and 'objects' must be lists")
    if len(raw_objects) > limits.max_objects:
        raise DataError(f"{what}: {len(raw_objects)} objects exceed the limit {limits.max_objects}")
    if not all(isinstance(p, str) for p in raw_packs):
        raise DataError(f"{what}: 'packs' must be a list of digest strings")
    packs = tuple(Digest.parse(p) for p in raw_packs)
    if list(packs) != [d for d, _ in pack_sizes]:
        raise DataError(
            f"{what}: 'packs' lists {len(packs)} digests that are not the manifest's "
            f"{len(pack_sizes)} pack layers in order"
        )
    filled = [0] * len(packs)
    spans: list[list[tuple[int, int]]] = [[] for _ in packs]
    objects: list[ObjectEntry] = []
    previous = ""
    for i, item in enumerate(raw_objects):
        where = f"{what}: objects[{i}]"
        if (
            not isinstance(item, list)
            or len(item) != 4
            or not isinstance(item[0], str)
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in item[1:])
        ):
            raise DataError(f"{where}: expected [<64 hex>, <pack>, <offset>, <size>]")
        hex_, pack, offset, size = item
        if _HEX64.fullmatch(hex_) is None:
            raise DataError(f"{where}: {hex_[:80]!r} is not a sha256 fs-verity digest (64 hex)")
        if hex_ <= previous:
            raise DataError(f"{where}: objects must be sorted by digest without repeats")
        previous = hex_
        if not 0 <= pack < len(packs):
            raise DataError(f"{where}: pack {pack} does not exist ({len(packs)} packs)")
        if size <= 0 or size > limits.max_object or offset < 0:
            raise DataError(f"{where}: offset {offset} / size {size} out of range")
        if offset + size > pack_sizes[pack][1]:
            raise DataError(
                f"{where}: bytes {offset}..{offset + size} lie beyond pack {pack} "
                f"({pack_sizes[pack][1]} bytes)"
            )
        spans[pack].append((offset, size))
        filled[pack] += size
        objects.append(ObjectEntry(hex_, pack, offset, size))
    for n, pack_spans in enumerate(spans):
        at = 0
        for offset, size in sorted(pack_spans):
            if offset != at:
                raise DataError(
                    f"{what}: pack {n} ({packs[n]}) has a gap or overlap at byte {at}; "
                    "a pack is its objects concatenated"
                )
            at += size
        if at != pack_sizes[n][1]:
            raise DataError(
                f"{what}: pack {n} ({packs[n]}) is {pack_sizes[n][1]} bytes but its objects "
                f"fill {at}"
            )
    return PackIndex(packs, tuple(objects))


# -- the OCI manifest --------------------------------------------------------------


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:  # Any: JSON
        out: dict[str, Any] = {  # Any: JSON
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True)
class ArtifactManifest:
    """The module's OCI image manifest, by role."""

    config: Descriptor
    image: Descriptor
    index: Descriptor
    packs: tuple[Descriptor, ...]
    sbom: Descriptor
    annotations: Mapping[str, str]

    @property
    def composefs_digest(self) -> Digest:
        return Digest.parse(self.annotations[COMPOSEFS_ANNOTATION])

    @property
    def layers(self) -> tuple[Descriptor, ...]:
        return (self.image, self.index, *self.packs, self.sbom)

    def to_bytes(self) -> bytes:
        return canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": ARTIFACT_TYPE,
                "config": self.config.to_json(),
                "layers": [d.to_json() for d in self.layers],
                "annotations": dict(self.annotations),
            }
        )


def manifest_annotations(config: ModuleConfig) -> dict[str, str]:
    return {
        TITLE: config.name,
        VERSION: config.version,
        CREATED: created_timestamp(config.source_date_epoch),
        COMPOSEFS_ANNOTATION: str(config.composefs_digest),
    }


def _descriptor(raw: object, where: str) -> Descriptor:
    if not isinstance(raw, dict):
        raise DataError(f"{where}: not a descriptor object")
    media_type, digest, size = raw.get("mediaType"), raw.get("digest"), raw.get("size")
    if not isinstance(media_type, str) or not isinstance(digest, str):
        raise DataError(f"{where}: needs string 'mediaType' and 'digest'")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise DataError(f"{where}: 'size' must be a non-negative integer")
    annotations = raw.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        raise DataError(f"{where}: 'annotations' must map strings to strings")
    try:
        parsed = Digest.parse(digest)
    except DataError as e:
        raise DataError(f"{where}: {e}") from e
    return Descriptor(media_type, parsed, size, annotations)


def parse_manifest(data: bytes, what: str, limits: FormatLimits) -> ArtifactManifest:
    """Parse a module manifest; refuse anything but the layout of docs/artifact.md."""
    doc = loads_object(data, what)
    if doc.get("schemaVersion") != 2 or doc.get("mediaType") != OCI_MANIFEST:
        raise DataError(f"{what}: not an OCI image manifest (schemaVersion 2, {OCI_MANIFEST})")
    if doc.get("artifactType") != ARTIFACT_TYPE:
        raise DataError(
            f"{what}: artifactType {doc.get('artifactType')!r} is not {ARTIFACT_TYPE!r}; "
            "this is not a powernode module"
        )
    config = _descriptor(doc.get("config"), f"{what}: config")
    if config.media_type != CONFIG_TYPE:
        raise DataError(f"{what}: config media type {config.media_type!r} is not {CONFIG_TYPE!r}")
    raw_layers = doc.get("layers")
    if not isinstance(raw_layers, list) or len(raw_layers) < 3:
        raise DataError(f"{what}: 'layers' must list image, index, packs… and SBOM")
    if len(raw_layers) > limits.max_packs + 3:
        raise DataError(f"{what}: {len(raw_layers)} layers exceed the limit")
    layers = [_descriptor(d, f"{what}: layers[{i}]") for i, d in enumerate(raw_layers)]
    expected = [IMAGE_TYPE, INDEX_TYPE] + [PACK_TYPE] * (len(layers) - 3) + [SBOM_TYPE]
    for i, (layer, want) in enumerate(zip(layers, expected, strict=True)):
        if layer.media_type != want:
            raise DataError(
                f"{what}: layers[{i}] has media type {layer.media_type!r}, expected {want!r} "
                "(order: image, index, packs, SBOM)"
            )
    annotations = doc.get("annotations")
    if not isinstance(annotations, dict) or not all(
        isinstance(v, str) for v in annotations.values()
    ):
        raise DataError(f"{what}: 'annotations' must map strings to strings")
    cfs = annotations.get(COMPOSEFS_ANNOTATION)
    if not isinstance(cfs, str):
        raise DataError(f"{what}: annotation {COMPOSEFS_ANNOTATION} is missing")
    Digest.parse(cfs)
    if layers[0].annotations.get(COMPOSEFS_ANNOTATION) != cfs:
        raise DataError(
            f"{what}: the image layer's {COMPOSEFS_ANNOTATION} differs from the manifest's {cfs}"
        )
    sizes = [
        ("config", config.size, limits.max_config),
        ("image", layers[0].size, limits.max_image),
        ("index", layers[1].size, limits.max_index),
        ("SBOM", layers[-1].size, limits.max_sbom),
    ]
    for name, size, limit in sizes:
        if size > limit:
            raise DataError(f"{what}: the {name} is {size} bytes; the limit is {limit}")
    return ArtifactManifest(
        config, layers[0], layers[1], tuple(layers[2:-1]), layers[-1], dict(annotations)
    )


def check_config_matches(manifest: ArtifactManifest, config: ModuleConfig, what: str) -> None:
    """The manifest's annotations must say what module.json says."""
    if config.composefs_digest != manifest.composefs_digest:
        raise DataError(
            f"{what}: module.json names composefs digest {config.composefs_digest}, "
            f"the manifest {manifest.composefs_digest}"
        )
    for key, value in ((TITLE, config.name), (VERSION, config.version)):
        if manifest.annotations.get(key) != value:
            raise DataError(
                f"{what}: annotation {key} is {manifest.annotations.get(key)!r}, "
                f"module.json says {value!r}"
            )
