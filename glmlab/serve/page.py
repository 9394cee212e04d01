"""`add_page`: the chat page at `GET /`, for people who do not use Jupyter (a classroom, an office).

Plain HTML, JavaScript and CSS shipped in the package (`glmlab/serve/static/`): no build step, no CDN.
The page talks to the server like any OpenAI client (GET /v1/models, POST /v1/chat/completions
streamed) and sends the API key the user types with every call. The page's own files hold no secret,
so they are served without a key (`is_page_request`); the Host header check still applies. Every
file goes out with a Content-Security-Policy that allows scripts, styles and connections from this
server only (no inline script, no other origin) and images from data: and blob: URLs (the picture
being asked about), so an answer shown on the page can never run code or call elsewhere.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.resources import files

from fastapi import FastAPI
from fastapi.responses import Response
from starlette.types import Scope

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # a new glmlab's page is picked up at once
}
# route -> (file in glmlab/serve/static, media type)
PAGE_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/chat.js": ("chat.js", "text/javascript; charset=utf-8"),
    "/static/chat.css": ("chat.css", "text/css; charset=utf-8"),
}


def is_page_request(scope: Scope) -> bool:
    """A GET (or HEAD) of one of the page's files: answered without an API key."""
    return scope["method"] in ("GET", "HEAD") and scope["path"] in PAGE_FILES


def add_page(app: FastAPI) -> None:
    """Serve the chat page's files at the routes of PAGE_FILES (kept out of /openapi.json: no API)."""
    static = files("glmlab.serve") / "static"
    for route, (name, media_type) in PAGE_FILES.items():
        body = (static / name).read_bytes()  # read once: a few kB each
        app.add_api_route(
            route,
            _responder(body, media_type),
            methods=["GET", "HEAD"],
            include_in_schema=False,
            response_class=Response,
        )


def _responder(body: bytes, media_type: str) -> Callable[[], Awaitable[Response]]:
    async def page_file() -> Response:
        return Response(body, media_type=media_type, headers=HEADERS)

    return page_file
