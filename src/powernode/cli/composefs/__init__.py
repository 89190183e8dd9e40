"""`powernode composefs …` commands, shaped like the composefs project's tools.

Each concern lives in its own file with a ``register(app)``, imported when its
command runs.
"""

from __future__ import annotations

from powernode.cli.base import App, Register

app = App(help="Write and read composefs images.")


def _mkimage() -> Register:
    from powernode.cli.composefs import mkimage as composefs_mkimage  # noqa: PLC0415 - imported when it runs

    return Register(composefs_mkimage.register)


def _info() -> Register:
    from powernode.cli.composefs import info as composefs_info  # noqa: PLC0415 - imported when it runs

    return Register(composefs_info.register)


app.add_lazy(
    "mkimage", _mkimage, "Write the composefs image of SRC to IMAGE (mkcomposefs-compatible bytes)."
)
app.add_lazy("info", _info, "List what a composefs image holds (like composefs-info).")
