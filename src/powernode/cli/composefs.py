"""`powernode composefs …` commands, shaped like the composefs project's tools.

Each concern lives in its own file with a ``register(app)``.
"""

from __future__ import annotations

import typer

from powernode.cli import composefs_info, composefs_mkimage

app = typer.Typer(help="Write and read composefs images.", no_args_is_help=True)
composefs_mkimage.register(app)
composefs_info.register(app)
