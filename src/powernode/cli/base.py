"""The command-line plumbing every ``powernode`` and ``powernode-agent`` group shares.

:class:`App` is a ``typer.Typer`` with the house defaults:

* **Lazy subgroups** (STYLE rule 15): :meth:`App.add_lazy` takes a group's
  loader (a function whose body imports the module: an ordinary, typed
  import, no module names in strings) and its one-line help; the loader runs
  only when that group runs or its own ``--help`` is asked for. ``powernode
  --help`` lists the groups from their help strings without importing them,
  so it loads neither the platform's web framework and ORM nor the registry
  and signing stacks.
* **Plain help**, click's layout without Rich (``rich_markup_mode=None``):
  Rich's help renderer alone costs ~0.3 s to import.
* **Plain metavars**: values show ``TEXT``, ``INTEGER``, ``PATH`` (or the
  metavar an option names, e.g. ``URL``), flags show none, arguments show
  their name in capitals (``REF STORE``), not typer's ``<str>`` / ``{ref}``.
* **One exit-code convention** (README, "Exit status"): 0 ok, 1 failed or
  refused, 2 usage (click's own usage errors). :func:`run` turns an error no
  command caught into one ``error:`` line and exit 1 instead of a traceback
  (a file-system error as ``error: PATH: reason``); ``POWERNODE_DEBUG=1``
  shows the traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

# "Any: typer's private click" below: typer vendors click as ``typer._click``, a private
# module, so click's Context, HelpFormatter, Parameter and Command, which these hooks
# take and return, are not part of typer's API to annotate with.
DEBUG_ENV = "POWERNODE_DEBUG"

# typer's type labels (`<str>`, `<path>`) → click's plain metavars.
_METAVARS = {
    "str": "TEXT",
    "path": "PATH",
    "file": "PATH",
    "directory": "DIRECTORY",
    "int": "INTEGER",
    "float": "FLOAT",
    "bool": "BOOLEAN",
    "datetime": "DATETIME",
    "uuid": "UUID",
}


def _plain_metavar(param: TyperOption, ctx: Any) -> str:  # Any: typer's private click
    label = param.display_type(ctx).strip("<>")
    if label.startswith("list[") and label.endswith("]"):
        label = label[5:-1]
    if " range" in label:  # an int with min/max: the range is shown in the help text
        label = label.split(" ", 1)[0]
    if "|" in label:  # a choice: show the choices, as click does
        return "[" + label + "]"
    return _METAVARS.get(label, label.upper() or "VALUE")


def _plain_params(params: list[Any], ctx: Any) -> None:  # Any: typer's private click
    """Give every value option and argument a plain metavar, once."""
    for p in params:
        if isinstance(p, TyperOption) and p.metavar is None and not (p.is_flag or p.count):
            p.metavar = _plain_metavar(p, ctx)
        elif isinstance(p, TyperArgument) and p.metavar is None and p.name:
            p.metavar = p.name.upper()


def _argument_usage(p: TyperArgument) -> str:
    name = p.metavar or (p.name or "").upper()
    if p.nargs != 1:
        name += "..."
    return name if p.required else f"[{name}]"


def _argument_record(p: TyperArgument) -> tuple[str, str]:
    name = p.metavar or (p.name or "").upper()
    if p.nargs != 1:
        name += "..."
    help_text = p.help or ""
    if not p.required and p.default not in (None, [], ()) and p.show_default is not False:
        help_text = f"{help_text}  [default: {p.default}]".strip()
    return name, help_text


class _FlagCoercion:
    """``--help``'s value as it is: typer would build a pydantic adapter to check a bool."""

    def coerce(self, value: object, param: object = None, ctx: object = None) -> object:
        return value


_COMPLETION_PARAMS = frozenset({"install_completion", "show_completion"})


class _Plain:
    """Usage line and option list in click's plain style (mixed into command and group)."""

    def get_help_option(self, ctx: Any) -> Any:  # Any: typer's private click
        # typer coerces every option's value through pydantic, --help's too when it
        # is not given: that import alone is ~40 ms of a --help or a `version`.
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None and getattr(option, "_runtime_param", None) is None:
            option._runtime_param = _FlagCoercion()
        return option

    def get_params(self, ctx: Any) -> list[Any]:  # Any: typer's private click
        # The same for typer's --install-completion/--show-completion (their
        # callbacks read the raw value): no pydantic on every command's path.
        params: list[Any] = super().get_params(ctx)  # type: ignore[misc]  # Any: typer's private click
        for p in params:
            if p.name in _COMPLETION_PARAMS and getattr(p, "_runtime_param", None) is None:
                p._runtime_param = _FlagCoercion()
        return params

    def collect_usage_pieces(self, ctx: Any) -> list[str]:  # Any: typer's private click
        cmd: Any = self  # Any: typer's private click
        _plain_params(cmd.params, ctx)
        rv = [cmd.options_metavar] if cmd.options_metavar else []
        for p in cmd.get_params(ctx):
            if isinstance(p, TyperArgument):
                rv.append(_argument_usage(p))
            else:
                rv.extend(p.get_usage_pieces(ctx))
        if isinstance(self, TyperGroup):
            rv.append(self.subcommand_metavar)
        return rv

    def format_options(self, ctx: Any, formatter: Any) -> None:  # Any: typer's private click
        cmd: Any = self  # Any: typer's private click
        _plain_params(cmd.params, ctx)
        args: list[tuple[str, str]] = []
        opts: list[tuple[str, str]] = []
        for p in cmd.get_params(ctx):
            if isinstance(p, TyperArgument):
                if not p.hidden:
                    args.append(_argument_record(p))
                continue
            rv = p.get_help_record(ctx)
            if rv is not None:
                opts.append(rv)
        if args:
            with formatter.section("Arguments"):
                formatter.write_dl(args)
        if opts:
            with formatter.section("Options"):
                formatter.write_dl(opts)
        if isinstance(self, TyperGroup):
            self.format_commands(ctx, formatter)


class PlainCommand(_Plain, TyperCommand):
    """A typer command with plain metavars."""


@dataclass(frozen=True)
class Register:
    """A module's ``register(app)``, which adds its commands to ``app``."""

    register: Callable[[typer.Typer], None]


# What a lazy entry's loader returns: a group, a register(app), or one command function.
Loaded: TypeAlias = typer.Typer | Register | Callable[..., None]
Loader: TypeAlias = Callable[[], Loaded]


class LazyCommands(MutableMapping[str, Any]):
    """A group's commands, where the lazy ones are imported on first lookup.

    Names list without importing anything (``powernode --help``); ``[name]``,
    ``get(name)`` and iterating over values import what they reach.
    """

    def __init__(
        self,
        loaded: dict[str, Any],  # Any: typer's private click
        lazy: dict[str, tuple[Loader, str]],
    ) -> None:
        self._loaded = loaded
        self._lazy = lazy

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded

    def short_help(self, name: str) -> str:
        return self._lazy[name][1]

    def __getitem__(self, name: str) -> Any:  # Any: typer's private click
        if name not in self._loaded and name in self._lazy:
            self._loaded[name] = load_command(self._lazy[name][0], name)
        return self._loaded[name]

    def __setitem__(self, name: str, cmd: Any) -> None:  # Any: typer's private click
        self._loaded[name] = cmd

    def __delitem__(self, name: str) -> None:
        self._loaded.pop(name, None)
        self._lazy.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        yield from self._loaded
        yield from (n for n in self._lazy if n not in self._loaded)

    def __len__(self) -> int:
        return len(set(self._loaded) | set(self._lazy))


class PlainGroup(_Plain, TyperGroup):
    """A typer group with plain metavars and lazily imported subcommands.

    ``lazy`` maps a subcommand's name to ``(loader, help)``;
    :class:`App` makes a subclass per app holding its own mapping.
    """

    lazy: ClassVar[dict[str, tuple[Loader, str]]] = {}

    def __init__(self, **kw: Any) -> None:  # Any: typer's keywords, passed through
        super().__init__(**kw)
        self.commands = LazyCommands(dict(self.commands), dict(self.lazy))

    def format_commands(self, ctx: Any, formatter: Any) -> None:  # Any: typer's private click
        commands = self.commands
        assert isinstance(commands, LazyCommands)
        names = list(commands)
        limit = formatter.width - 6 - max((len(n) for n in names), default=0)
        rows: list[tuple[str, str]] = []
        for name in names:
            if not commands.is_loaded(name):  # described by its help string, not imported
                rows.append((name, commands.short_help(name)))
            elif not commands[name].hidden:
                rows.append((name, commands[name].get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def load_command(load: Loader, name: str) -> Any:  # Any: typer's private click
    """Run ``load`` and make the click command called ``name`` of what it returns.

    An :class:`App` is a group (even with one command); a :class:`Register`
    adds commands to an app (``name`` is taken from them); anything else is a
    typer command function.
    """
    obj = load()
    cmd: Any  # Any: typer's private click
    if isinstance(obj, typer.Typer):
        cmd = typer.main.get_group(obj)
    elif isinstance(obj, Register):
        holder = App()
        obj.register(holder)
        cmd = typer.main.get_group(holder).commands[name]
    else:
        single = App()
        single.command(name)(obj)
        cmd = typer.main.get_command_from_info(
            single.registered_commands[0],
            pretty_exceptions_short=single.pretty_exceptions_short,
            rich_markup_mode=single.rich_markup_mode,
        )
    cmd.name = name
    return cmd


def _group() -> None:
    pass


class App(typer.Typer):
    """``typer.Typer`` with plain help, plain metavars and :meth:`add_lazy`."""

    def __init__(self, **kw: Any) -> None:  # Any: typer's keywords, passed through
        self._lazy: dict[str, tuple[Loader, str]] = {}
        cls = type("LazyGroup", (PlainGroup,), {"lazy": self._lazy})
        kw.setdefault("rich_markup_mode", None)
        kw.setdefault("add_completion", False)
        kw.setdefault("pretty_exceptions_enable", False)
        kw.setdefault("no_args_is_help", True)
        # A callback makes typer build a group even when every command is lazy.
        kw.setdefault("callback", _group)
        super().__init__(cls=cls, **kw)

    def command(
        self,
        name: str | None = None,
        **kw: Any,  # Any: typer.Typer.command keywords, passed through
    ) -> Callable[..., Any]:  # Any: typer's own decorator type
        kw.setdefault("cls", PlainCommand)
        return super().command(name, **kw)

    def add_lazy(self, name: str, load: Loader, help_text: str) -> None:
        """Add what ``load`` returns as ``name``; ``load`` runs (and imports) on first use."""
        self._lazy[name] = (load, help_text)


def run(app: typer.Typer) -> None:
    """Run ``app`` as a program: an error no command caught becomes one line, exit 1."""
    try:
        # The program's own name in usage lines, also when started as `python -c …`.
        app(prog_name=app.info.name or None)
    except Exception as e:
        if os.environ.get(DEBUG_ENV):
            raise
        print(one_line(e), file=sys.stderr)
        sys.exit(1)


def one_line(e: Exception) -> str:
    """The ``error:`` line for an error no command caught."""
    if isinstance(e, OSError) and e.filename is not None:
        # A path the user gave (or a default one) that is missing or not allowed.
        where = f"{e.filename} -> {e.filename2}" if e.filename2 else e.filename
        return f"error: {where}: {e.strerror or e}"
    return f"error: {e} ({type(e).__name__}, unexpected: {DEBUG_ENV}=1 shows the traceback)"


# The long-running commands' log output (docs/operations.md): platform serve,
# platform worker, powernode-agent service, mcp serve.
LogFormatOpt = typer.Option(
    "text",
    "--log-format",
    metavar="FORMAT",
    help="text, json (one object per line on stderr) or journal (journald's fields).",
)


def configure_logging(fmt: str, *, verbose: bool = False) -> None:
    """Route logging as ``--log-format`` says; a usage error (exit 2) for another name."""
    import logging  # noqa: PLC0415 - not on --help's path

    from powernode import logsetup  # noqa: PLC0415

    if fmt not in logsetup.FORMATS:
        raise typer.BadParameter(
            f"{fmt!r}: use one of {', '.join(logsetup.FORMATS)}", param_hint="--log-format"
        )
    level = logging.DEBUG if verbose else logging.INFO
    if fmt == "text":
        # Leave handlers someone else installed (a host program, pytest) in place.
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger().setLevel(level)
        return
    logsetup.configure(fmt, level=level)
