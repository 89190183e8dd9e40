"""Text listings of an image in the formats of ``composefs-info ls`` and ``dump``.

``dump`` lines follow composefs-dump(5): PATH SIZE MODE NLINK UID GID RDEV
MTIME PAYLOAD CONTENT DIGEST, then ``name=value`` xattrs. Bytes are escaped
as composefs does: ``\\\\``, ``\\n``, ``\\r``, ``\\t``, anything not printable
(not ``isgraph``, or not ``isprint`` where spaces are allowed) as ``\\xHH``,
``=`` as ``\\x3d`` in xattrs, and a lone ``-`` as ``\\x2d`` where ``-`` means
"unset". A hard link is written as the dump input format spells it:
``PATH 0 @MODE 0 0 0 0 0.0 TARGET - -`` (the spec's example F).
"""

from __future__ import annotations

from typing import Final

from powernode.verity.composefs.reader import Entry, EntryType

# mkcomposefs accepts CONTENT up to this many bytes (COMPOSEFS.md §5.1); a
# plain EROFS image may store far larger files, which dump leaves out.
DUMP_CONTENT_MAX: Final = 5000
_SPECIAL: Final = {0x5C: "\\\\", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}
_EQUAL: Final = 0x3D
_SPACE: Final = 0x20


def escape(
    value: bytes, *, allow_space: bool = False, equal: bool = False, lone_dash: bool = False
) -> str:
    """Escape ``value`` as composefs' ``print_escaped`` does."""
    if lone_dash and value == b"-":
        return "\\x2d"
    out = []
    low = _SPACE if allow_space else _SPACE + 1  # isprint vs isgraph in the C locale
    for c in value:
        special = _SPECIAL.get(c)
        if special is not None:
            out.append(special)
        elif (c == _EQUAL and equal) or not low <= c <= 0x7E:
            out.append(f"\\x{c:02x}")
        else:
            out.append(chr(c))
    return "".join(out)


def _optional(value: bytes | None) -> str:
    return "-" if not value else escape(value, lone_dash=True)


def dump_line(
    entry: Entry,
    content: bytes | None = None,
    xattrs: list[tuple[bytes, bytes]] | None = None,
) -> str:
    """One composefs-dump(5) line; ``content`` is the inline content, if known;
    ``xattrs`` in the order to print (``Image.info_xattrs``), else ``entry.xattrs``."""
    path = escape(entry.path)
    if entry.hardlink_to is not None:
        return f"{path} 0 @{entry.mode:o} 0 0 0 0 0.0 {_optional(entry.hardlink_to)} - -"
    payload = entry.symlink if entry.type is EntryType.SYMLINK else entry.payload
    fields = [
        path,
        str(entry.size),
        f"{entry.mode:o}",
        str(entry.nlink),
        str(entry.uid),
        str(entry.gid),
        str(entry.rdev),
        f"{entry.mtime[0]}.{entry.mtime[1]}",
        _optional(payload),
        _optional(content),
        entry.digest.hex() if entry.digest else "-",
    ]
    shown = entry.xattrs.items() if xattrs is None else xattrs
    fields += [f"{escape(name, equal=True)}={escape(value, equal=True)}" for name, value in shown]
    return " ".join(fields)


def wants_content(entry: Entry) -> bool:
    """Whether ``dump`` prints this entry's content (stored in the image, small enough)."""
    return entry.inline and entry.hardlink_to is None and entry.size <= DUMP_CONTENT_MAX


def ls_line(entry: Entry) -> str | None:
    """The ``composefs-info ls`` line of an entry; None for the root, which ls omits."""
    if entry.path == b"/":
        return None
    path = escape(entry.path, allow_space=True)
    if entry.type is EntryType.DIR:
        return f"{path}/\t"
    if entry.type is EntryType.SYMLINK and entry.symlink is not None:
        return f"{path}\t-> {escape(entry.symlink)}"
    if entry.type is EntryType.FILE and entry.payload is not None:
        return f"{path}\t@ {escape(entry.payload)}"
    return path
