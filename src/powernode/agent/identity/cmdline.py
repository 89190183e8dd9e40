"""Kernel command line source: ``powernode.id=<uuid>`` in /proc/cmdline.

The splitter follows the kernel's ``next_arg()`` (lib/cmdline.c): tokens are
separated by ASCII whitespace, a ``"`` anywhere toggles quoting, there is no
escape character, a value's surrounding quotes are dropped, and a token that
starts with ``"`` loses its outer quotes, so ``"k=a b"`` and ``k="a b"`` are the
same (GRUB rewrites one into the other). A bare ``--`` ends the kernel's own
parameters; what follows belongs to init, so we stop there too. Hyphens and
underscores in a key are equivalent (the kernel's ``parameq()``).
"""

from __future__ import annotations

from powernode.agent.identity.model import Outcome
from powernode.agent.identity.source import ProbeContext, SourceMiss, read_host_text
from powernode.agent.identity.validate import InvalidIdentifier, parse_uuid

KEY = "powernode.id"
# COMMAND_LINE_SIZE is 2048 on x86/arm/powerpc, larger elsewhere; 64 KiB covers all.
MAX_CMDLINE_BYTES = 64 * 1024
_SPACE = " \t\n\v\f\r"


def parse_cmdline(text: str) -> list[tuple[str, str | None]]:
    """Split a kernel command line into ``(key, value)`` pairs, as the kernel does.

    ``value`` is ``None`` for a bare flag (no ``=``). Parsing stops at ``--``.
    """
    pairs: list[tuple[str, str | None]] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in _SPACE:
            i += 1
        if i >= n:
            return pairs
        quoted = text[i] == '"'
        if quoted:
            i += 1
        in_quote = quoted
        start, equals = i, -1
        while i < n:
            ch = text[i]
            if ch in _SPACE and not in_quote:
                break
            if equals < 0 and ch == "=":
                equals = i
            if ch == '"':
                in_quote = not in_quote
            i += 1
        end = i
        tail_taken = False
        key: str
        value: str | None
        if equals < 0:
            key, value = text[start:end], None
        else:
            key, value = text[start:equals], text[equals + 1 : end]
            if value.startswith('"'):
                value = value[1:]
                if value.endswith('"'):
                    value = value[:-1]
                tail_taken = True
        if quoted and not tail_taken:
            if value is not None and value.endswith('"'):
                value = value[:-1]
            elif value is None and key.endswith('"'):
                key = key[:-1]
        if not quoted and value is None and key == "--":
            return pairs
        pairs.append((key, value))


def parse_nul_argv(data: str) -> list[tuple[str, str | None]]:
    """Split /proc/1/cmdline (NUL-separated argv, no quoting) into pairs."""
    pairs: list[tuple[str, str | None]] = []
    for arg in data.split("\0"):
        if not arg:
            continue
        key, sep, value = arg.partition("=")
        pairs.append((key, value if sep else None))
    return pairs


def _same_key(key: str) -> bool:
    return key.replace("-", "_") == KEY


def find_instance_id(pairs: list[tuple[str, str | None]], where: str) -> str:
    """The validated ``powernode.id`` among ``pairs``, or ``SourceMiss``.

    Repeated keys: the last occurrence wins (systemd and cloud-init agree),
    but occurrences that disagree are refused — an identity must not depend
    on which of two bootloader entries happened to come last.
    """
    values = [v for k, v in pairs if _same_key(k)]
    if not values:
        raise SourceMiss(Outcome.ABSENT, f"{where}: no {KEY}= parameter")
    if any(v is None for v in values):
        raise SourceMiss(Outcome.INVALID, f"{where}: {KEY} is given without '=<uuid>'")
    parsed: list[str] = []
    for raw in values:
        assert raw is not None  # checked above; narrows the type
        try:
            parsed.append(parse_uuid(raw, f"{where}: {KEY}"))
        except InvalidIdentifier as e:
            raise SourceMiss(Outcome.INVALID, f"{e}; boot with {KEY}=<uuid>") from e
    if len(set(parsed)) > 1:
        raise SourceMiss(
            Outcome.INVALID,
            f"{where}: {KEY} is given {len(parsed)} times with different values "
            f"({', '.join(dict.fromkeys(parsed))}); keep exactly one in the bootloader entry",
        )
    return parsed[-1]


class CmdlineSource:
    name = "cmdline"

    def probe(self, ctx: ProbeContext) -> tuple[str, str]:
        # In a container /proc/cmdline is the host's; cloud-init reads PID 1's argv instead.
        rel = "/proc/1/cmdline" if ctx.in_container else "/proc/cmdline"
        path = ctx.path(rel)
        text = read_host_text(path, MAX_CMDLINE_BYTES)
        if text is None:
            raise SourceMiss(Outcome.ABSENT, f"{path}: does not exist")
        pairs = parse_nul_argv(text) if ctx.in_container else parse_cmdline(text)
        instance_id = find_instance_id(pairs, str(path))
        return instance_id, f"{KEY}= in {rel}"
