"""Pure core of the writer: rewrite a Tree into inodes and place them on disk.

Implements shared/notes/COMPOSEFS.md §5 steps 2–6 exactly as mkcomposefs
1.0.8 does: format-version choice (§13), the overlay rewrite (§6.1), BFS
numbering (§6.2), build_time (§6.3), the shared xattr table (§7.4),
per-type data (§8.3) and the placement algorithm (§9). No I/O happens here;
`writer.py` turns a `Plan` into bytes.
"""

from __future__ import annotations

import functools
import stat
from collections import Counter, deque
from dataclasses import dataclass, field

from powernode.errors import ConfigError, SourceTreeError
from powernode.verity.composefs import erofs_layout as L
from powernode.verity.composefs.tree import HardLink, Node, Tree, is_whiteout

_S_IFMT = 0o170000  # stat.S_IFMT() as a mask: no call per node in the loops below


def _round_up(x: int, a: int) -> int:
    return (x + a - 1) // a * a


@dataclass(eq=False)
class Inode:
    """One inode as it will be written; filled in step by step."""

    mode: int
    uid: int
    gid: int
    mtime: int
    mtime_nsec: int
    size: int = 0
    rdev: int = 0
    nlink: int = 1
    xattrs: dict[bytes, bytes] = field(default_factory=dict)
    target: bytes = b""
    content: bytes | None = None
    external: bool = False
    entries: list[tuple[bytes, Inode]] = field(default_factory=list)  # dirs, sorted
    bfs_children: list[Inode] = field(default_factory=list)
    path: bytes = b""
    # set by numbering and placement
    ino: int = 0
    compact: bool = True
    shared_ids: list[int] = field(default_factory=list)
    shared_pairs: list[tuple[bytes, bytes]] = field(default_factory=list)
    inline_pairs: list[tuple[bytes, bytes]] = field(default_factory=list)
    xattr_size: int = 0
    layout: int = L.LAYOUT_FLAT_PLAIN
    n_blocks: int = 0
    tail_len: int = 0
    dir_groups: list[list[tuple[bytes, Inode]]] = field(default_factory=list)
    chunkbits: int = 0
    tail_moved: bool = False  # §9 "otherwise" branch: the tail became a block
    nid: int = 0
    first_block: int = 0

    @property
    def isize(self) -> int:
        return L.COMPACT_INODE.size if self.compact else L.EXTENDED_INODE.size


@dataclass
class Plan:
    """Everything the emitter needs, in BFS order."""

    version: int
    inodes: list[Inode]
    build_time: tuple[int, int]
    has_acl: bool
    shared_table: list[tuple[bytes, bytes]]
    inodes_end: int = 0
    shared_size: int = 0
    data_start: int = 0
    total_blocks: int = 0


def choose_version(tree: Tree, version: int | None) -> int:
    """§13: default min 0 / max 1, raised to 1 when the tree has a whiteout."""
    if version is not None:
        if not 0 <= version <= L.COMPOSEFS_MAX_FORMAT_VERSION:
            raise ConfigError(
                f"composefs format version {version} is not supported; use 0 or 1 "
                "(or leave it unset to let the writer choose like mkcomposefs)"
            )
        return version
    return 1 if any(is_whiteout(n) for _, n in tree.walk()) else 0


@functools.lru_cache(maxsize=4096)
def split_name(name: bytes) -> tuple[int, bytes]:
    """(name_index, suffix) with the first matching prefix of §7.1.

    Cached: an image has a handful of distinct xattr names (the overlay ones
    on every external file), each split several times by the plan and emitter.
    """
    for prefix, index in L.XATTR_WRITE_PREFIXES:
        if name.startswith(prefix):
            return index, name[len(prefix) :]
    return L.XATTR_INDEX_NONE, name


def xattr_entry_size(name: bytes, value: bytes) -> int:
    _, suffix = split_name(name)
    return _round_up(L.XATTR_ENTRY.size + len(suffix) + len(value), L.XATTR_ALIGN)


_METACOPY_HEAD = L.METACOPY_HEADER.pack(
    L.METACOPY_VERSION, L.METACOPY_LENGTH, 0, L.FS_VERITY_HASH_ALG_SHA256
)


def metacopy_value(digest: bytes | None) -> bytes:
    """§8.2: version 0, length 36, flags 0, alg sha256, digest; empty if unknown."""
    if digest is None:
        return b""
    return _METACOPY_HEAD + digest


def _rewrite(tree: Tree, version: int) -> Inode:
    """§6.1: a rewritten copy of the tree; the input Tree is never modified."""
    made: dict[int, Inode] = {}
    order: list[tuple[Node, Inode, Inode | None]] = []
    stack: list[tuple[Node, bytes, Inode | None]] = [(tree.root, b"/", None)]
    while stack:  # preorder, children in name order
        node, path, parent = stack.pop()
        ino = Inode(
            mode=node.mode,
            uid=node.uid,
            gid=node.gid,
            mtime=node.mtime,
            mtime_nsec=node.mtime_nsec,
            nlink=node.nlink,
            path=path,
        )
        made[id(node)] = ino
        order.append((node, ino, parent))
        if node.mode & _S_IFMT == stat.S_IFDIR:
            base = path.rstrip(b"/")
            for name in sorted(node.children, reverse=True):
                child = node.children[name]
                if not isinstance(child, HardLink):
                    stack.append((child, base + b"/" + name, ino))
    for node, ino, parent in order:
        owner = parent if parent is not None else ino
        # 1. escape the user's overlay xattrs (renamed in place, never collides)
        for name, value in node.xattrs.items():
            if name.startswith(L.OVERLAY_PREFIX):
                ino.xattrs[L.OVERLAY_ESCAPED_PREFIX + name[len(L.OVERLAY_PREFIX) :]] = value
            else:
                ino.xattrs[name] = value
        fmt = node.mode & _S_IFMT
        if fmt == stat.S_IFREG:
            ino.size = node.size
            if node.content is not None and node.size > 0:
                ino.content = node.content
            elif node.size > 0:  # 2. external content: overlay metacopy + redirect
                ino.external = True
                ino.xattrs[L.OVERLAY_METACOPY] = metacopy_value(node.digest)
                if node.payload:
                    ino.xattrs[L.OVERLAY_REDIRECT] = b"/" + node.payload
        elif fmt == stat.S_IFLNK:
            ino.target = node.target or b""
            ino.size = len(ino.target)
        elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
            ino.rdev = node.rdev
        # 3. a whiteout (is_whiteout: char device 0:0) → regular file marked for overlayfs
        if fmt == stat.S_IFCHR and node.rdev == 0:
            ino.mode = stat.S_IFREG | stat.S_IMODE(node.mode)
            ino.xattrs[L.OVERLAY_ESCAPED_WHITEOUT] = b""
            ino.xattrs[L.USER_OVERLAY_WHITEOUT] = b""
            owner.xattrs[L.OVERLAY_ESCAPED_WHITEOUTS] = b""
            owner.xattrs[L.USER_OVERLAY_WHITEOUTS] = b""
            if version >= 1:
                owner.xattrs[L.OVERLAY_ESCAPED_OPAQUE] = b"x"
                owner.xattrs[L.USER_OVERLAY_OPAQUE] = b"x"
        if fmt == stat.S_IFDIR:  # 4. entries, with "." and ".." as hard links
            entries: list[tuple[bytes, Inode]] = [(b".", ino), (b"..", owner)]
            for name, child in node.children.items():
                if isinstance(child, HardLink):
                    entries.append((name, made[id(child.target)]))
                else:
                    target = made[id(child)]
                    entries.append((name, target))
                    ino.bfs_children.append(target)
            ino.entries = entries
    root = made[id(tree.root)]
    root.xattrs[L.OVERLAY_OPAQUE] = b"y"  # 5.
    selinux = root.xattrs.get(L.SELINUX_XATTR)
    names = {name for name, _ in root.entries}
    for i in range(L.ROOT_STUB_COUNT):  # 6. whiteout stubs hide the store's 00..ff
        name = b"%02x" % i
        if name in names:
            continue
        stub = Inode(
            mode=L.ROOT_STUB_MODE,
            uid=root.uid,
            gid=root.gid,
            mtime=root.mtime,
            mtime_nsec=root.mtime_nsec,
            path=b"/" + name,
        )
        if selinux is not None:
            stub.xattrs[L.SELINUX_XATTR] = selinux
        root.entries.append((name, stub))
        root.bfs_children.append(stub)
    return root


def _number(root: Inode) -> list[Inode]:
    """§6.2: BFS order, directory nlink, sorted entries and xattrs."""
    out: list[Inode] = []
    queue = deque([root])
    while queue:
        ino = queue.popleft()
        ino.ino = len(out)
        out.append(ino)
        if stat.S_ISDIR(ino.mode):
            ino.entries.sort(key=lambda e: e[0])
            ino.bfs_children.sort(key=lambda c: c.path)
            ino.nlink = 2 + sum(1 for c in ino.bfs_children if stat.S_ISDIR(c.mode))
            queue.extend(ino.bfs_children)
        ino.xattrs = dict(sorted(ino.xattrs.items()))
    return out


def _type_data(ino: Inode) -> None:
    """§8.3: n_blocks, tail and datalayout per type (before placement)."""
    fmt = stat.S_IFMT(ino.mode)
    if fmt == stat.S_IFDIR:
        groups: list[list[tuple[bytes, Inode]]] = [[]]
        s = 0
        for name, target in ino.entries:
            n = L.DIRENT.size + len(name)
            if s + n > L.BLOCK_SIZE:
                groups.append([])
                s = 0
            groups[-1].append((name, target))
            s += n
        ino.dir_groups = groups
        if s > L.DIR_TAIL_MAX:
            ino.n_blocks, ino.tail_len = len(groups), 0
        else:
            ino.n_blocks, ino.tail_len = len(groups) - 1, s
        ino.size = ino.n_blocks * L.BLOCK_SIZE + ino.tail_len
    elif fmt == stat.S_IFREG and ino.content is not None:
        ino.n_blocks, ino.tail_len = divmod(ino.size, L.BLOCK_SIZE)
        if ino.tail_len > L.DIR_TAIL_MAX:
            ino.n_blocks, ino.tail_len = ino.n_blocks + 1, 0
    elif fmt == stat.S_IFREG and ino.external:
        ino.chunkbits = min(max((ino.size - 1).bit_length(), L.CHUNK_MIN_BITS), L.CHUNK_MAX_BITS)
        count = -(-ino.size // (1 << ino.chunkbits))
        if count > L.CHUNK_MAX_COUNT:
            raise SourceTreeError(
                f"{ino.path.decode(errors='replace')}: file of {ino.size} bytes needs "
                f"{count} chunks; composefs allows {L.CHUNK_MAX_COUNT} (2**53 bytes)"
            )
        ino.tail_len = count * L.CHUNK_ADDR.size
        ino.layout = L.LAYOUT_CHUNK_BASED
        return
    elif fmt == stat.S_IFLNK:
        ino.tail_len = len(ino.target)
    elif fmt != stat.S_IFREG:
        ino.size = 0
    ino.layout = L.LAYOUT_FLAT_INLINE if ino.tail_len else L.LAYOUT_FLAT_PLAIN


def _xattr_layout(ino: Inode, shared: set[tuple[bytes, bytes]]) -> None:
    """§7.2/§7.4: the first 128 shared pairs by reference, the rest inline."""
    if not ino.xattrs:
        ino.xattr_size = 0
        return
    size = L.XATTR_IBODY_HEADER.size
    for pair in ino.xattrs.items():
        if pair in shared and len(ino.shared_pairs) < L.XATTR_MAX_SHARED_PER_INODE:
            ino.shared_pairs.append(pair)
            size += L.XATTR_SHARED_ID.size
        else:
            ino.inline_pairs.append(pair)
            size += xattr_entry_size(*pair)
    ino.xattr_size = size


def _place(plan: Plan) -> None:
    """§9: nids, padding and tails; then the data area."""
    pos = L.INODE_TABLE_START
    for ino in plan.inodes:
        isize, x = ino.isize, ino.xattr_size
        pos = _round_up(pos, L.SLOT_SIZE)
        if stat.S_ISLNK(ino.mode):
            t = isize + x + len(ino.target)
            if t >= L.BLOCK_SIZE:  # target goes out of line into one block
                ino.n_blocks, ino.tail_len, ino.layout = 1, 0, L.LAYOUT_FLAT_PLAIN
            if pos // L.BLOCK_SIZE != (pos + t - 1) // L.BLOCK_SIZE:
                pos = _round_up(pos, L.BLOCK_SIZE)
        elif ino.tail_len > 0:
            r = L.BLOCK_SIZE - (pos + isize + x) % L.BLOCK_SIZE
            if r < ino.tail_len:
                e = _round_up(r, L.SLOT_SIZE)
                r2 = L.BLOCK_SIZE - (pos + isize + x + e) % L.BLOCK_SIZE
                if ino.tail_len <= r2:
                    pos += e
                else:  # unreachable in practice (source only): tail becomes a block
                    ino.n_blocks += 1
                    ino.tail_len = 0
                    ino.tail_moved = True
                    pos = _round_up(pos, L.BLOCK_SIZE)
                    if stat.S_ISDIR(ino.mode):
                        ino.size = ino.n_blocks * L.BLOCK_SIZE
        ino.nid = pos // L.SLOT_SIZE
        pos += isize + x + ino.tail_len
    plan.inodes_end = _round_up(pos, L.SLOT_SIZE)
    plan.shared_size = sum(xattr_entry_size(n, v) for n, v in plan.shared_table)
    plan.data_start = _round_up(plan.inodes_end + plan.shared_size, L.BLOCK_SIZE)
    block = plan.data_start // L.BLOCK_SIZE
    for ino in plan.inodes:
        if ino.n_blocks:
            ino.first_block = block
            block += ino.n_blocks
    plan.total_blocks = block
    # shared ids count 4-byte units from xattr_blkaddr * 4096 (§7.4)
    ids: dict[tuple[bytes, bytes], int] = {}
    off = plan.inodes_end % L.BLOCK_SIZE
    for pair in plan.shared_table:
        ids[pair] = off // L.XATTR_ALIGN
        off += xattr_entry_size(*pair)
    for ino in plan.inodes:
        ino.shared_ids = [ids[p] for p in ino.shared_pairs]


def make_plan(tree: Tree, *, version: int | None = None) -> Plan:
    """Rewrite, number and place ``tree``; the result is ready to emit."""
    chosen = choose_version(tree, version)
    inodes = _number(_rewrite(tree, chosen))
    build_time = min((i.mtime, i.mtime_nsec) for i in inodes)
    has_acl = any(n in L.ACL_XATTR_NAMES for i in inodes for n in i.xattrs)
    counts = Counter(pair for i in inodes for pair in i.xattrs.items())
    shared = {pair for pair, n in counts.items() if n >= 2}
    table = sorted(shared, key=lambda p: (p[0], len(p[1]), p[1]), reverse=True)
    for ino in inodes:
        _type_data(ino)
        _xattr_layout(ino, shared)
        ino.compact = (
            (ino.mtime, ino.mtime_nsec) == build_time
            and ino.nlink <= L.COMPACT_MAX_ID
            and ino.uid <= L.COMPACT_MAX_ID
            and ino.gid <= L.COMPACT_MAX_ID
            and ino.size <= L.COMPACT_MAX_SIZE
        )
    plan = Plan(chosen, inodes, build_time, has_acl, table)
    _place(plan)
    return plan
