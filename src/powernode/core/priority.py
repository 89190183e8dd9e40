"""Module priorities: category position, variety, and the one total order.

Seed 003: "Priorities are determined by the module's category position +
variety", with an operator override of ``effective_priority`` per
assignment, on the runbook's scale: ``effective_priority: 95 // higher
than userland (90)``. So a module's priority is a number on the operator's
scale, never rescaled::

    priority = override if given, else category_position   (10, 60, 70, 80, 90)

and the order of the stack is the pair ``(priority, variety)``: a higher
priority wins; at equal priority the variety decides (subscription <
config < instance), so a config module beats the subscription module it
configures in the same category and an instance module beats both, and no
variety lifts a module above a higher priority. An override of 95 sits above
every userland module (90, whatever its variety) and below 96.

Issue 13 item 11: this used to be ``category_position * 10 + variety
offset`` with the override used as given on that scale, so the runbook's
95 landed below system-base (100). Migration 0005 converted stored values.

Where one integer must carry the whole order (the node API's
``effective_priority``, which the agent sorts by), :func:`stack_rank`
encodes the pair as ``priority * 10 + variety offset`` (offsets 0, 3, 6 are
below 10, so the encoding preserves the order); it is never what an operator
types or reads.
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
        """The variety's rank inside one priority (0, 3, 6): see :func:`stack_rank`."""
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
    """``override`` when given, else ``category_position``: the operator's scale.

    ``variety`` does not change the number; it orders modules of equal
    priority (:func:`priority_key`). It stays a parameter so callers say
    which module they mean and the signature matches the seed's wording.
    """
    del variety  # orders ties, never shifts the number (see the module docstring)
    if override is not None:
        return override
    return category_position


def stack_rank(priority: int, variety: Variety) -> int:
    """The order ``(priority, variety)`` as one integer: ``priority * 10 + variety.offset``."""
    return priority * 10 + variety.offset


# Greater than every negated byte (<= 0), so a name sorts after every longer
# name it is a prefix of once the bytes are negated.
_END: Final = 1


def priority_key(
    module_name: str, priority: int, variety: Variety = Variety.SUBSCRIPTION
) -> tuple[int, int, tuple[int, ...]]:
    """A key whose ``max()`` is the winning module and whose ascending sort is the stack.

    Higher priority wins; at equal priority the higher variety (subscription
    < config < instance). On a full tie the name that sorts FIRST bytewise
    (UTF-8) wins: that is the order a table sorted by (priority desc, name)
    shows top to bottom, and the order ``mount.compose`` stacks overlay
    lowers in (``sorted(key=(-rank, name))``, first = top). Bytes, not
    ``str`` comparison, so the order does not depend on locale or
    normalisation.
    """
    return priority, variety.offset, (*(-b for b in module_name.encode("utf-8")), _END)
