"""`powernode module …` commands.

The commands live in small files by concern; each file has a ``register(app)``
that adds its commands here.
"""

from __future__ import annotations

import typer

from powernode.cli import (
    module_build,
    module_compose,
    module_init,
    module_inspect,
    module_manifest,
    module_publish,
)

app = typer.Typer(help="Author, validate, compose and inspect modules.", no_args_is_help=True)
module_manifest.register(app)
module_compose.register(app)
module_inspect.register(app)
module_publish.register(app)
module_build.register(app)
module_init.register(app)
