"""What every console page shares: session and actor, rendering, the POST checks,
units of work (read-only for pages), bulk actions and keyset cursors.

Pages read in a read-only unit (``state.unit(actor, write=False)``): on SQLite
a list page never takes the write lock, so browsing the console never holds up
a heartbeat or a promotion. Actions run in a write unit, as the REST API's do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, urlparse

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.orm import Session

from powernode import __version__
from powernode.errors import PowernodeError
from powernode.platform.api.deps import PlatformState
from powernode.platform.problems import AuthenticationError, PlatformError
from powernode.platform.services import tokens
from powernode.platform.services.context import Actor, Ctx
from powernode.platform.ui import session as sess

HERE = Path(__file__).parent
PAGE = 50
MAX_BULK = 200

Form = dict[str, list[str]]
# What a template may be given: rows, strings, numbers, None, nested (object: Jinja reads it).
View = object

env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)

# Strict: no inline script or style, nothing from elsewhere; the interaction
# layer is /app/static/app.js, ours.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def headers(resp: Response) -> Response:
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "same-origin"
    resp.headers["Cache-Control"] = "no-store"
    return resp


def state_of(request: Request) -> PlatformState:
    state = request.app.state.platform
    assert isinstance(state, PlatformState)
    return state


class Login(PowernodeError):
    """No usable session: go to the login page."""


def session_of(request: Request) -> sess.UiSession:
    s = sess.open_cookie(state_of(request).sealer, request.cookies.get(sess.COOKIE))
    if s is None:
        raise Login
    return s


def authenticate(state: PlatformState, token: str) -> Actor:
    """The token's actor, read in a read-only session (no write lock on SQLite)."""
    with Session(state.engine, expire_on_commit=False) as db:
        return tokens.authenticate(db, token, state.clock())


def actor_of(request: Request) -> tuple[sess.UiSession, Actor]:
    s = session_of(request)
    state = state_of(request)
    try:
        return s, authenticate(state, s.token)
    except AuthenticationError as e:
        raise Login from e


def render(request: Request, page_name: str, code: int = 200, /, **ctx: View) -> Response:
    html = env.get_template(page_name).render(request=request, version=__version__, **ctx)
    return headers(HTMLResponse(html, status_code=code))


def redirect(url: str) -> Response:
    return headers(RedirectResponse(url, status_code=303))


def to_login(request: Request) -> Response:
    nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return redirect(f"/app/login?next={quote(nxt)}")


@contextmanager
def unit(request: Request, actor: Actor) -> Iterator[Ctx]:
    """A write unit of work, for an action."""
    with state_of(request).unit(actor) as ctx:
        yield ctx


@contextmanager
def read(request: Request, actor: Actor) -> Iterator[Ctx]:
    """A read-only unit of work, for a page: no write lock (SQLite)."""
    with state_of(request).unit(actor, write=False) as ctx:
        yield ctx


class Handler(Protocol):
    async def __call__(self, request: Request) -> Response: ...


def page(fn: Callable[[Request], Response]) -> Handler:
    """A page handler: a missing or dead session goes to the login page."""

    async def wrapper(request: Request) -> Response:
        try:
            return await asyncio.to_thread(fn, request)
        except Login:
            return to_login(request)
        except PlatformError as e:  # not found, not allowed: the service's own words
            return render(
                request, "error.html", e.status, title=f"{e.status} {e.title}", message=e.detail
            )

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


async def _form(request: Request, s: sess.UiSession) -> Form:
    """The posted form, after the Origin and CSRF checks."""
    origin = request.headers.get("origin")
    if origin and urlparse(origin).netloc != request.url.netloc:
        raise PermissionError("a form posted from another site")
    form = await request.form()
    if not s.check_csrf(str(form.get("csrf") or "")):
        raise PermissionError("the form's CSRF token does not match this session; reload the page")
    return {k: [str(v) for v in form.getlist(k)] for k in form}


async def posted(request: Request) -> tuple[sess.UiSession, Actor, Form] | Response:
    """A POST's session, actor and checked form, or the response that refuses it
    (the login page, or 403 for a cross-site or CSRF-less form)."""
    try:
        s, actor = await asyncio.to_thread(actor_of, request)
    except Login:
        return to_login(request)
    try:
        form = await _form(request, s)
    except PermissionError as e:
        return render(request, "error.html", 403, title="Refused", message=str(e), csrf=s.csrf)
    return s, actor, form


def action(fn: Callable[[Request, Actor, Form], str]) -> Handler:
    """A POST handler: checks session and CSRF, runs ``fn`` (which returns where to go),
    and shows the service's refusal on an error page."""

    async def wrapper(request: Request) -> Response:
        checked = await posted(request)
        if isinstance(checked, Response):
            return checked
        s, actor, form = checked
        try:
            where = await asyncio.to_thread(fn, request, actor, form)
        except PlatformError as e:
            return render(
                request, "error.html", e.status, title=f"{e.status} {e.title}",
                message=e.detail, csrf=s.csrf, actor=actor,
            )  # fmt: skip
        return redirect(where)

    wrapper.__name__ = fn.__name__
    return wrapper


def one(form: Form, key: str, default: str = "") -> str:
    values = form.get(key) or [default]
    return values[0].strip()


# One selected row's outcome: {"id", "what", "ok" ("yes" or ""), "detail"}.
Result = dict[str, str]


def bulk(
    title: Callable[[Form], str],
    field: str,
    back: str,
    each: Callable[[Ctx, str, Form], tuple[str, str]],
) -> Handler:
    """A bulk action over the selected rows (form field ``field``): ``each`` runs per
    row in its own write unit and returns (what, detail); a refusal stops only that
    row, and the result page lists what happened to each."""

    async def wrapper(request: Request) -> Response:
        checked = await posted(request)
        if isinstance(checked, Response):
            return checked
        s, actor, form = checked
        ids = form.get(field, [])[:MAX_BULK]

        def run() -> list[Result]:
            results: list[Result] = []
            for rid in ids:
                try:
                    with unit(request, actor) as ctx:
                        what, detail = each(ctx, rid, form)
                    results.append({"id": rid, "what": what, "ok": "yes", "detail": detail})
                except PlatformError as e:
                    results.append({"id": rid, "what": rid, "ok": "", "detail": e.detail})
            return results

        results = await asyncio.to_thread(run)
        return render(request, "bulk.html", csrf=s.csrf, actor=actor, results=results,
                      title=title(form), back=back)  # fmt: skip

    return wrapper
