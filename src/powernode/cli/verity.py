"""`powernode verity …` commands.

``digest`` prints what fsverity-utils' ``fsverity digest`` prints
(``<alg>:<hex> FILE``, one line per file, options of the same names), so the
two can be compared line by line. Unlike ``fsverity digest``, a file that
cannot be read does not stop the others: it gets a line on stderr and the
exit status is 1.
"""

from __future__ import annotations

import re
from typing import Annotated

import typer

from powernode.cli.base import App
from powernode.errors import ConfigError
from powernode.verity.fsverity import VerityFileError, format_digest, fsverity_digest_file
from powernode.verity.fsverity_tree import verity_params

app = App(help="fs-verity digests, computed in userspace.", no_args_is_help=True)

# fsverity-utils also accepts the FS_VERITY_HASH_ALG_* numbers.
_ALG_NUMBERS = {"1": "sha256", "2": "sha512"}


def _salt(text: str) -> bytes:
    # bytes.fromhex() alone would also take spaces, which fsverity-utils rejects.
    if len(text) % 2 or not re.fullmatch(r"[0-9a-fA-F]*", text):
        raise ConfigError(
            f"--salt {text!r} is not a hex string; give an even number of hex digits "
            "(at most 64), e.g. --salt=0123abcd"
        )
    return bytes.fromhex(text)


@app.command("digest")
def digest(
    files: Annotated[
        list[str], typer.Argument(metavar="FILE", help="Files to hash.", show_default=False)
    ],
    hash_alg: Annotated[
        str, typer.Option("--hash-alg", help="Hash algorithm: sha256 or sha512.")
    ] = "sha256",
    block_size: Annotated[
        int, typer.Option("--block-size", help="Merkle tree block size: a power of 2, 1024-65536.")
    ] = 4096,
    salt: Annotated[
        str, typer.Option("--salt", help="Salt as hex (up to 32 bytes); none by default.")
    ] = "",
    threads: Annotated[
        int | None,
        typer.Option("--threads", help="Hashing threads per file [default: CPU count]."),
    ] = None,
) -> None:
    """Print the fs-verity digest of each FILE, as `fsverity digest` does."""
    algorithm = _ALG_NUMBERS.get(hash_alg, hash_alg)
    try:
        salt_bytes = _salt(salt)
        verity_params(algorithm, block_size, salt_bytes)
    except ConfigError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    failed = False
    for name in files:
        try:
            raw = fsverity_digest_file(
                name, algorithm=algorithm, block_size=block_size, salt=salt_bytes, threads=threads
            )
        except VerityFileError as e:
            typer.echo(f"error: {e}", err=True)
            failed = True
            continue
        except ConfigError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from e
        typer.echo(f"{format_digest(raw, algorithm)} {name}")
    if failed:
        raise typer.Exit(1)
