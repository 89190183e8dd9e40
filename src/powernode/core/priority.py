"""Module priorities: category position, variety, and the one total order.

Seed 003: "Priorities are determined by the module's category position +
variety", with an operator override of ``effective_priority`` per
assignment. The formula here is::

    effective_priority = category_position * 10 + variety offset
    offsets: subscription 0, config 3, instance 6

Why ``* 10``: category positions are 10 apart (60, 70, 80, 90), so without
scaling the variety offsets and any operator override would have to share a
gap of 9 with the next category. Scaled, each category owns a band of 10
values: a config module (+3) beats the subscription module it configures,
an instance module (+6) beats both, and no variety lifts a module into the
next category. The gaps (1, 2, 4, 5, 7, 8, 9) are left for overrides.

The seed's override example (``effective_priority: 95 // higher than
userland (90)``) is written on the unscaled scale; here the same intent is
``950`` (userland subscription is 900, instance 906). An override is used
as given, never scaled.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class Variety(StrEnum):
    """How a module relates to others (seed 003); ordered subscription < config < instance."""

    SUBSCRIPTION = "subscription"  # always present once assigned (nginx, k3s-server)
    CONFIG = "config"  # changes another module's (its parent's) configuration
    INSTANCE = "instance"  # per-NodeInstance customisation

    @property
    def offset(self) -> int:
        """Added to ``category_position * 10``."""
        return _OFFSETS[self]

    # StrEnum would order by the strings ("config" < "instance" <
    # "subscription"); order by rank so ``sorted()`` and ``max()`` agree
    # with the priorities.
    def __lt__(self, other: str) -> bool:
        if not isinstance(other, Variety):
            return NotImplemented
        return self.offset < other.offset

    def __le__(self, other: str) -> bool:
        if not isinstance(other, Variety):
            return NotImplemented
        return self.offset <= other.offset

    def __gt__(self, other: str) -> bool:
        if not isinstance(other, Variety):
            return NotImplemented
        return self.offset > other.offset

    def __ge__(self, other: str) -> bool:
        if not isinstance(other, Variety):
            return NotImplemented
        return self.offset >= other.offset


_OFFSETS: Final[dict[Variety, int]] = {
    Variety.SUBSCRIPTION: 0,
    Variety.CONFIG: 3,
    Variety.INSTANCE: 6,
}


@dataclass(frozen=True)
class Category:
    """An ordered grouping of modules (platform-side NodeModuleCategory)."""

    slug: str
    position: int


# Seed 003 numbers network (60), container runtimes (70) and userland (90+).
# It leaves two unnumbered; chosen here:
# - system-base 10: the base every other module builds on, so the lowest;
#   what it must keep (/etc/shadow) it keeps through protected_spec, which
#   holds in both priority directions.
# - security-hardening 80: above network and container runtimes so its
#   hardened sysctl/daemon settings win over theirs, below userland so an
#   application's own config stays in the application's hands unless the
#   hardening module protects that file.
SEEDED_CATEGORIES: Final[tuple[Category, ...]] = (
    Category("system-base", 10),
    Category("network-overlay", 60),
    Category("container-runtimes", 70),
    Category("security-hardening", 80),
    Category("userland", 90),
)


def effective_priority(
    category_position: int, variety: Variety, override: int | None = None
) -> int:
    """``override`` when given, else ``category_position * 10 + variety.offset``."""
    if override is not None:
        return override
    return category_position * 10 + variety.offset


# Greater than every negated byte (<= 0), so a name sorts after every longer
# name it is a prefix of once the bytes are negated.
_END: Final = 1


def priority_key(module_name: str, priority: int) -> tuple[int, tuple[int, ...]]:
    """A key whose ``max()`` is the winning module and whose ascending sort is the stack.

    Higher priority wins. On a tie the name that sorts FIRST bytewise (UTF-8)
    wins: that is the order a table sorted by (priority desc, name) shows
    top to bottom, and the order ``mount.compose`` stacks overlay lowers in
    (``sorted(key=(-priority, name))``, first = top). Bytes, not ``str``
    comparison, so the order does not depend on locale or normalisation.
    """
    return priority, (*(-b for b in module_name.encode("utf-8")), _END)
