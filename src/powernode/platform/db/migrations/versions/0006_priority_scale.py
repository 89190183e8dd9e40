"""Assignment priorities on the operator's scale (issue 13 item 11).

Revision ID: 0006_priority_scale
Revises: 0005_webhook_body_replay
Create Date: 2026-12-07

Priorities were stored as ``category_position * 10 + variety offset``
(userland config 903) and an override was used as given on that scale, so
seed 003's ``effective_priority: 95 // higher than userland (90)`` landed
below system-base (100). Now a priority is the category position or the
override, as the operator types it, and the variety orders modules of equal
priority (core/priority.py).

Upgrade divides both columns by 10, rounding down. That keeps every stored
stack in the order it had against the categories: an old override of 950
becomes 95 (above userland 90); an old 95, which sat below system-base
(100), becomes 9, still below system-base (10). What is lost is the last
digit of an override inside a band (old 905 and 900 both become 90; the
variety then decides the tie). Downgrade multiplies by 10 and adds the
module's variety offset back to the computed ``priority`` (0, 3, 6), and
multiplies an override by 10 (95 becomes 950, the old scale's same intent).
"""

from __future__ import annotations

from alembic import op

revision = "0006_priority_scale"
down_revision: str | None = "0005_webhook_body_replay"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Integer division on both databases (both operands are INTEGER, values >= 0).
    op.execute("UPDATE node_module_assignments SET priority = priority / 10")
    op.execute(
        "UPDATE node_module_assignments SET effective_priority = effective_priority / 10 "
        "WHERE effective_priority IS NOT NULL"
    )


def downgrade() -> None:
    op.execute(
        "UPDATE node_module_assignments SET priority = priority * 10 + "
        "(SELECT CASE node_modules.variety WHEN 'config' THEN 3 WHEN 'instance' THEN 6 "
        "ELSE 0 END FROM node_modules WHERE node_modules.id = node_module_assignments.module_id)"
    )
    op.execute(
        "UPDATE node_module_assignments SET effective_priority = effective_priority * 10 "
        "WHERE effective_priority IS NOT NULL"
    )
