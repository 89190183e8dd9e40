"""``Allow`` for every 405: the methods some route of the app accepts on the path.

RFC 9110 §15.5.6: a 405 response MUST carry ``Allow`` listing the target
resource's methods. Starlette puts the methods of the *first* route whose
path matched into its 405, but FastAPI makes one route per operation (on
``/node_modules``, GET and POST), and nests included routers. So each
method is asked of the app's routes through the public ``matches()``, which
answers for nested routers too: endpoints added later are covered without a
list to keep.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Match
from starlette.types import Scope

# RFC 9110 §9 methods, in the order a reader expects; TRACE and CONNECT are never routed.
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(routes: list[BaseRoute], scope: Scope) -> list[str]:
    """The methods of :data:`METHODS` some route in ``routes`` fully matches on ``scope``'s path."""
    return [
        m
        for m in METHODS
        if any(r.matches({**scope, "method": m})[0] is Match.FULL for r in routes)
    ]
