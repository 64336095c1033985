"""`prep ui`'s web app: a small ASGI app (Starlette, served by uvicorn) whose pages are rendered here and whose
few scripts and styles are files of this package, so the page asks nothing of the network. Every action is one
JSON call that runs a prep verb (prep.ui.actions, prep.ui.job) on a path under ROOT.

Why Starlette and uvicorn: both small, pure Python (uvicorn's own dependencies: click and h11, which prep has),
maintained by the encode team for years, and nothing in them fetches anything; Gradio (LLaMA-Factory's board)
brings a front-end bundle of its own, its own analytics and ~100 MB of dependencies."""

from __future__ import annotations

import contextlib
import hmac
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from http.cookies import SimpleCookie
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prep.core.findings import PrepError
from prep.core.options import LOOPBACK
from prep.files.atomic import Staged
from prep.files.errors import os_error_message
from prep.ui import actions, pages
from prep.ui.job import Job
from prep.ui.root import WORK, Refused, Root

COOKIE = "prep_ui_token"
STATIC = ("ui.css", "ui.js")
MAX_UPLOAD = 4 << 30  # bytes an upload may hold


class Guard:
    """Every request: a Host this server answers to (loopback: no other name, so a web page elsewhere cannot reach
    it through DNS rebinding), a change (not GET) only from its own pages (Origin), and the token when one is set
    (a cookie, `Authorization: Bearer`, or `?token=` once, which sets the cookie)."""

    def __init__(self, app: ASGIApp, token: str | None, hosts: tuple[str, ...] | None) -> None:
        self.app, self.token, self.hosts = app, token, hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:host.find("]")]
        if self.hosts is not None and name not in self.hosts:
            await PlainTextResponse(f"prep ui answers only to {', '.join(self.hosts)}", 403)(scope, receive, send)
            return
        origin = headers.get("origin")
        if scope["method"] not in ("GET", "HEAD") and origin is not None and urlsplit(origin).netloc != host:
            await PlainTextResponse("prep ui takes changes only from its own pages", 403)(scope, receive, send)
            return
        if self.token is None:
            await self.app(scope, receive, send)
            return
        cookie = SimpleCookie(headers.get("cookie", ""))
        given = [cookie[COOKIE].value if COOKIE in cookie else "",
                 headers.get("authorization", "").removeprefix("Bearer ").strip()]
        query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[0]
        if any(hmac.compare_digest(g.encode(), self.token.encode()) for g in given if g):
            await self.app(scope, receive, send)
        elif query and hmac.compare_digest(query.encode(), self.token.encode()):
            async def with_cookie(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message["headers"], (b"set-cookie", f"{COOKIE}={self.token}; Path=/; "
                                                                 "HttpOnly; SameSite=Strict".encode("latin-1"))]
                await send(message)

            await self.app(scope, receive, with_cookie)
        else:
            await PlainTextResponse("prep ui needs its token: open the URL `prep ui` printed", 401)(
                scope, receive, send)


def _api(work: Callable[[Request], Awaitable[Any]]) -> Callable[[Request], Awaitable[Response]]:
    """A JSON endpoint: its answer, or the refusal in one line (403 for a path outside ROOT, 400 for what prep
    refused, as the CLI words it)."""

    async def endpoint(request: Request) -> Response:
        try:
            return JSONResponse(await work(request))
        except Refused as e:
            return JSONResponse({"error": str(e)}, 403)
        except PrepError as e:
            return JSONResponse({"error": str(e)}, 400)
        except OSError as e:
            return JSONResponse({"error": os_error_message(e)}, 400)
        except (KeyError, TypeError, ValueError) as e:
            return JSONResponse({"error": f"a malformed request ({type(e).__name__}: {e})"}, 400)

    return endpoint


def make_app(folder: str | Path, token: str | None = None, hosts: tuple[str, ...] | None = LOOPBACK) -> ASGIApp:
    """The app serving ROOT `folder`; `hosts`: the Host names it answers to (None: any, when it listens beyond
    loopback, where the token guards it)."""
    root = Root(folder)
    job = Job(root)

    async def page(request: Request) -> Response:
        if request.path_params["page"] not in pages.PAGES:
            return PlainTextResponse("not found", 404)
        return HTMLResponse(pages.render(request.path_params["page"], root))

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return PlainTextResponse("not found", 404)
        text = resources.files("prep.ui").joinpath("static", name).read_text(encoding="utf-8")
        return Response(text, media_type="text/css" if name.endswith(".css") else "text/javascript")

    async def files(request: Request) -> Response:
        try:
            path = root.path(request.path_params["path"])
        except Refused as e:
            return PlainTextResponse(str(e), 403)
        if not path.is_file():
            return PlainTextResponse(f"{request.path_params['path']}: no such file under ROOT", 404)
        return FileResponse(path)

    async def listing(request: Request) -> Any:
        return await run_in_threadpool(root.listing)

    async def upload(request: Request) -> Any:
        target = root.path(request.query_params["path"])
        if target.exists():
            raise PrepError(f"{request.query_params['path']}: already there; choose another name (nothing is "
                            "written over)")
        target.parent.mkdir(parents=True, exist_ok=True)
        root.inside(target.parent)
        size = 0
        # a failed or oversized upload leaves nothing behind
        with Staged(target) as staged, open(staged.path, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_UPLOAD:
                    raise PrepError(f"an upload may hold at most {MAX_UPLOAD >> 30} GB")
                out.write(chunk)
        return {"saved": root.rel(target), "bytes": size}

    async def data(request: Request) -> Any:
        body = await request.json()
        return await run_in_threadpool(actions.data, root, body["file"], body.get("format") or "auto")

    async def row(request: Request) -> Any:
        q = request.query_params
        number, line = (int(q[k]) if q.get(k) else None for k in ("row", "line"))
        return await run_in_threadpool(actions.row, root, q["file"], number, line, q.get("format") or "auto")

    async def template(request: Request) -> Any:
        return await run_in_threadpool(actions.template, root, await request.json())

    async def recipe_yaml(request: Request) -> Any:
        body = await request.json()
        return {"yaml": actions.dump(actions.build(root, body["path"], body["form"]))}

    async def recipe_save(request: Request) -> Any:
        body = await request.json()
        return await run_in_threadpool(actions.save, root, body["path"], body["form"], bool(body.get("write", True)))

    async def recipe_load(request: Request) -> Any:
        return await run_in_threadpool(actions.load, root, request.query_params["path"])

    async def run_start(request: Request) -> Any:
        return await run_in_threadpool(job.start, (await request.json())["recipe"])

    async def run_stop(request: Request) -> Any:
        return job.stop()

    async def run_status(request: Request) -> Any:
        return await run_in_threadpool(job.status)

    async def runs(request: Request) -> Any:
        return await run_in_threadpool(actions.runs, root)

    routes = [
        Route("/", lambda request: RedirectResponse("/data")),
        Route("/{page}", page),
        Route("/static/{name}", static),
        Route("/files/{path:path}", files),
        Route("/api/files", _api(listing)),
        Route("/api/upload", _api(upload), methods=["PUT"]),
        Route("/api/data", _api(data), methods=["POST"]),
        Route("/api/row", _api(row)),
        Route("/api/template", _api(template), methods=["POST"]),
        Route("/api/recipe", _api(recipe_load)),
        Route("/api/recipe/yaml", _api(recipe_yaml), methods=["POST"]),
        Route("/api/recipe/save", _api(recipe_save), methods=["POST"]),
        Route("/api/run/start", _api(run_start), methods=["POST"]),
        Route("/api/run/stop", _api(run_stop), methods=["POST"]),
        Route("/api/run/status", _api(run_status)),
        Route("/api/runs", _api(runs)),
    ]
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        job.stop()  # the server stops: so does its run, cleanly

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.root, app.state.job = root, job
    (root.folder / WORK).mkdir(exist_ok=True)
    return Guard(app, token, hosts)


def serve(folder: str, host: str, port: int, token: str | None) -> None:
    """Listen on `host`:`port` (0: a free port, chosen now), print the URL, serve until Ctrl-C."""
    import uvicorn  # noqa: PLC0415 - start-up time: the server only once the app is built

    loopback = host in LOOPBACK
    if not loopback and not token:
        raise PrepError(f"--host {host} listens beyond this machine: give --token SECRET too (every request must "
                        "carry it)")
    bind = "127.0.0.1" if host == "localhost" else host
    sock = socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((bind, port))
    except OSError as e:
        raise PrepError(f"cannot listen on {host}:{port}: {os_error_message(e)}") from None
    app = make_app(folder, token, LOOPBACK if loopback else None)
    shown = f"[{bind}]" if ":" in bind else bind
    url = f"http://{shown}:{sock.getsockname()[1]}/" + (f"?token={token}" if token else "")
    print(f"prep ui: serving {Path(folder).resolve()} at {url}  (Ctrl-C stops it)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    server.run(sockets=[sock])
