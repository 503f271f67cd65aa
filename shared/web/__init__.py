"""The web page the gateway serves: `GET /` (index.html) and `GET /static/<file>`.

Static files only, no build step: they are read from this package on first use and kept in
memory (the gateway's cold start does not read them). Only the files that exist in `static/`
at that moment can be served, looked up by exact name, so no path (`..`, `%2e`, `/`) reaches
the file system. Every path the page uses is relative to its own address, so it works on the
local runtime and behind a deployed HTTP trigger alike.

index.html names its assets with a content hash (`static/app.js?v=1a2b3c4d`): the index is
revalidated on every load (`no-cache`), the assets may be cached for a day.
"""

from __future__ import annotations

import hashlib
import os
import re

from shared.errors import MethodNotAllowed, NotFound

HERE = os.path.dirname(os.path.abspath(__file__))
STATIC = os.path.join(HERE, "static")
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.[a-z]+$")
INDEX_CACHE = "no-cache"
ASSET_CACHE = "public, max-age=86400"
#: the page talks only to its own origin and runs only its own script and style
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'self'; form-action 'none'; frame-ancestors 'none'")
_SECURITY = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}

_assets: dict[str, tuple[str, str]] | None = None  # name -> (content type, text)
_index: str | None = None


def assets() -> dict[str, tuple[str, str]]:
    """Every servable static file, by name: (content type, text)."""
    global _assets
    if _assets is None:
        found = {}
        for name in sorted(os.listdir(STATIC)):
            ext = os.path.splitext(name)[1]
            if _NAME.match(name) and ext in TYPES and os.path.isfile(os.path.join(STATIC, name)):
                with open(os.path.join(STATIC, name), encoding="utf-8") as f:
                    found[name] = (TYPES[ext], f.read())
        _assets = found
    return _assets


def version(name: str) -> str:
    return hashlib.sha256(assets()[name][1].encode("utf-8")).hexdigest()[:10]


def index_html() -> str:
    """index.html with each `static/<name>` reference carrying its content hash."""
    global _index
    if _index is None:
        with open(os.path.join(HERE, "index.html"), encoding="utf-8") as f:
            text = f.read()
        _index = re.sub(r'"static/([a-z0-9_-]+\.[a-z]+)"',
                        lambda m: f'"static/{m.group(1)}?v={version(m.group(1))}"' if m.group(1) in assets()
                        else m.group(0), text)
    return _index


def _response(content_type: str, text: str, cache: str, extra: dict | None = None) -> dict:
    return {"statusCode": 200, "isBase64Encoded": False, "body": text,
            "headers": {"Content-Type": content_type, "Cache-Control": cache, **_SECURITY, **(extra or {})}}


def serve(method: str, path: str) -> dict | None:
    """The response for `/` or `/static/<name>`; None for any other path (not ours)."""
    if path != "/" and not path.startswith("/static/"):
        return None
    if method not in ("GET", "HEAD"):
        raise MethodNotAllowed(f"{method} is not allowed here; use GET")
    if path == "/":
        return _response(TYPES[".html"], index_html(), INDEX_CACHE, {"Content-Security-Policy": CSP})
    found = assets().get(path[len("/static/"):])
    if found is None:
        raise NotFound("no such file")
    return _response(found[0], found[1], ASSET_CACHE)
