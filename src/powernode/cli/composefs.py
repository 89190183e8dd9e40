"""`powernode composefs …` commands, shaped like the composefs project's tools.

Each concern lives in its own file with a ``register(app)``, imported when its
command runs.
"""

from __future__ import annotations

from powernode.cli.base import App

app = App(help="Write and read composefs images.")
app.add_lazy(
    "mkimage",
    "powernode.cli.composefs_mkimage:register",
    "Write the composefs image of SRC to IMAGE (mkcomposefs-compatible bytes).",
)
app.add_lazy(
    "info",
    "powernode.cli.composefs_info:register",
    "List what a composefs image holds (like composefs-info).",
)
