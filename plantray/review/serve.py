"""``plantray review serve``: the review site over HTTP on this machine, writing the decisions file as the
reviewer works (aiohttp, which Ray's ``default`` extra already installs).

The page finds the server at ``_plantray/serve`` (absent on file:// and static hosts, where the site works as
before) and, after each change, sends the whole decisions CSV with ``PUT _plantray/decisions``; the server
checks the header line and writes the file atomically. The PUT must carry the ``X-Plantray-Review`` header:
a browser sends a custom header to another origin only after a CORS preflight this server never answers, so
no other web page can write the file.
"""

from __future__ import annotations

import os

from aiohttp import web

from plantray import storage

HEADER = "identificationID,decision,scientificName,identifiedBy,dateIdentified,identificationRemarks"
TOKEN_HEADER = "X-Plantray-Review"
MAX_BYTES = 256 * 1024**2  # a decisions file of ~2 million rows
SITE, DECISIONS = web.AppKey("site", str), web.AppKey("decisions", str)


async def _info(request: web.Request) -> web.Response:
    return web.json_response({"decisions": request.app[DECISIONS]})


async def _put_decisions(request: web.Request) -> web.Response:
    if request.headers.get(TOKEN_HEADER) != "1":
        raise web.HTTPForbidden(text=f"missing {TOKEN_HEADER} header")
    body = await request.read()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise web.HTTPBadRequest(text="the decisions file must be UTF-8") from None
    if text.split("\r\n", 1)[0].split("\n", 1)[0] != HEADER:
        raise web.HTTPBadRequest(text=f"the first line must be {HEADER}")
    storage.write_bytes(request.app[DECISIONS], body)  # atomic: a reader sees the old file or the new one
    return web.json_response({"decisions": request.app[DECISIONS], "bytes": len(body)})


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(os.path.join(request.app[SITE], "index.html"))


def make_app(site: str, decisions: str) -> web.Application:
    """The server's application.

    Args:
        site: the review site's local directory.
        decisions: where the decisions file is written (local path or object-store URI).
    Returns:
        An aiohttp application serving the site's files read-only, ``GET _plantray/serve`` and
        ``PUT _plantray/decisions``.
    """
    app = web.Application(client_max_size=MAX_BYTES)
    app[SITE], app[DECISIONS] = site, decisions
    app.router.add_get("/_plantray/serve", _info)
    app.router.add_put("/_plantray/decisions", _put_decisions)
    app.router.add_get("/", _index)
    app.router.add_static("/", site, follow_symlinks=False, show_index=False)
    return app


def serve(site: str, decisions: str, host: str, port: int) -> None:
    """Serves until interrupted (Ctrl-C)."""
    print(f"review site: http://{host}:{port}/  (decisions written to {decisions}; Ctrl-C to stop)", flush=True)
    web.run_app(make_app(site, decisions), host=host, port=port, print=None, access_log=None)
