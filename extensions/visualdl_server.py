"""Run one VisualDL board the way the workbench serves it: `python -m extensions.visualdl_server`.

Both the proxy's `visualdl` board and the `%visualdl` magic's boards run through here rather than
through the `visualdl` command, because the command cannot be told what the workbench needs:

- Framing. jupyter-server-proxy replaces the Jupyter server's own response headers with the
  upstream's, so a board that sends no Content-Security-Policy could be framed by any site. Every
  response here says `frame-ancestors 'self'`: in the browser 'self' is the origin the board was
  loaded from, which is the user's own server (the hub's proxy serves it under the user's prefix).
- Loopback only. The board has no login of its own; the Jupyter server in front of it does that, so
  it must not listen beyond 127.0.0.1.
- No telemetry. VisualDL reports usage to its vendor unless told not to; our servers have no
  business calling out.

- A key. On one machine every user's server shares the loopback interface, and jupyter-server-proxy
  forwards `<any user's server>/proxy/<port>/...` to any local port; so a board that answered
  everyone on 127.0.0.1 would answer another user through their own server. With
  `WORKBENCH_VISUALDL_TOKEN` set, the board answers only requests that carry the key: in the
  `X-Workbench-VisualDL-Token` header (the proxy's own `visualdl` entry adds it), in a cookie scoped
  to the board's path, or once in the `workbench_token` query parameter of the link a notebook
  shows, which is swapped for that cookie.

The app itself is VisualDL's (`visualdl.server.app.create_app`), with `public_path` set to the
prefix under which the proxy exposes it, so its pages, assets and API resolve through the proxy.

Lifetime. The proxy's board is started and stopped by jupyter-server-proxy. A `%visualdl` board is
started by a kernel with `--lifeline FD`: the read end of a pipe whose only write end the kernel
holds. However the kernel ends (SIGKILL too), the kernel's end closes, the board's read returns
end-of-file at once and the board exits. SIGINT ends the board at once too (the first step of the
kernel's stop); it only reads logs, so it has nothing to save.
"""

from __future__ import annotations

import argparse
import hmac
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlencode

from workbench_contract.visualdl import SERVER_MODULE, TOKEN_ENV, TOKEN_HEADER, TOKEN_QUERY

# Framing only from the user's own server origin; never from anywhere else (and never `*`).
FRAME_ANCESTORS = "frame-ancestors 'self'"
REFUSED = ("This VisualDL board answers only its owner's links: open it from your notebook "
           "(%visualdl) or from your server's VisualDL launcher.")


def token_cookie(port: int) -> str:
    """The cookie holding a board's key (one name per board, so boards never mix)."""
    return f"workbench-visualdl-{port}"


def security_headers() -> dict[str, str]:
    """Headers added to every response of a workbench VisualDL board."""
    return {
        "Content-Security-Policy": FRAME_ANCESTORS,
        # For browsers that predate frame-ancestors; the CSP wins where both are understood.
        "X-Frame-Options": "SAMEORIGIN",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    }


def check_public_path(value: str) -> str:
    """VisualDL's public path: absolute, not the root, no trailing slash.

    Raises:
        ValueError: with what to pass instead.
    """
    path = value.rstrip("/")
    if not value.startswith("/") or not path:
        raise ValueError(
            f"public path {value!r} must be an absolute URL path below the root, "
            "e.g. /user/alice/visualdl (the prefix the proxy serves the board under)"
        )
    return path


def create_app(logdirs: Sequence[str], public_path: str, port: int, cache_timeout: float = 2.0,
               token: str | None = None):
    """VisualDL's Flask app for `logdirs` under `public_path`, with the workbench's headers.

    With `token`, every request must carry it (header, cookie, or the query parameter once).
    """
    from flask import Response, redirect, request
    from visualdl.server.app import create_app as visualdl_app
    from visualdl.server.args import ParseArgs

    args = ParseArgs(
        logdir=list(logdirs), host="127.0.0.1", port=port, public_path=public_path,
        cache_timeout=cache_timeout, telemetry=False,
        # Pages fail (500) for clients that send no Accept-Language when no language is set;
        # the workbench speaks English.
        language="en",
    )
    app = visualdl_app(args)
    headers = security_headers()
    cookie = token_cookie(port)

    def matches(value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), token.encode())

    @app.before_request
    def _require_token():
        if token is None:
            return None
        if matches(request.headers.get(TOKEN_HEADER)) or matches(request.cookies.get(cookie)):
            return None
        if matches(request.args.get(TOKEN_QUERY)):
            # Swap the key in the link for a cookie, so it leaves the address bar and history.
            rest = [(k, v) for k, v in request.args.items(multi=True) if k != TOKEN_QUERY]
            target = request.path + ("?" + urlencode(rest) if rest else "")
            response = redirect(target, code=302)
            response.set_cookie(cookie, token, path=public_path + "/", httponly=True,
                                samesite="Strict")
            return response
        return Response(REFUSED, status=403, mimetype="text/plain")

    @app.after_request
    def _add_headers(response):
        for name, value in headers.items():
            response.headers[name] = value
        return response

    return app


def watch_lifeline(fd: int) -> threading.Thread:
    """Exit this process, status 0, once the pipe `fd` reads end-of-file: its write end, held only
    by the process that started the board, has closed because that process is gone.

    Exiting is `os._exit` from the watching thread, after flushing the output: the main thread
    may be busy serving a request, and the board holds nothing that needs saving.
    """
    def watch() -> None:
        try:
            while os.read(fd, 64):
                pass  # nothing is ever written; a byte would only mean "still here"
        except OSError:
            pass
        print("VisualDL board: the kernel that started it has gone; stopping", flush=True)
        sys.stderr.flush()
        os._exit(0)

    thread = threading.Thread(target=watch, name="visualdl-lifeline", daemon=True)
    thread.start()
    return thread


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m {SERVER_MODULE}",
        description="Serve a VisualDL board on 127.0.0.1 behind a Jupyter server's proxy.",
    )
    parser.add_argument("--logdir", nargs="+", required=True,
                        help="log folders; each folder below holding VisualDL records is a run")
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    parser.add_argument("--public-path", required=True,
                        help="the URL prefix the proxy serves the board under")
    parser.add_argument("--cache-timeout", type=float, default=2.0,
                        help="seconds VisualDL caches what it read (low: live charts)")
    parser.add_argument("--lifeline", type=int, default=None, metavar="FD",
                        help="a pipe's read end; exit when it closes (its starter is gone)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        public_path = check_public_path(args.public_path)
    except ValueError as err:
        parser.error(str(err))
    if not 0 < args.port < 65536:
        parser.error(f"--port {args.port}: use a port between 1 and 65535")
    if args.lifeline is not None:
        try:
            os.fstat(args.lifeline)
        except OSError:
            parser.error(f"--lifeline {args.lifeline}: no such open file descriptor")
        # Before the slow imports, so a kernel that dies while its board starts leaves nothing.
        watch_lifeline(args.lifeline)
    for logdir in args.logdir:
        # A new user has no jobs yet; an empty board beats a board that will not start.
        Path(logdir).expanduser().mkdir(parents=True, exist_ok=True)
    app = create_app(args.logdir, public_path, args.port, args.cache_timeout,
                     token=os.environ.get(TOKEN_ENV) or None)
    # Stopping starts with SIGINT; make it end the board at once whatever this process inherited
    # (a shell's background job starts with SIGINT ignored) and whatever VisualDL sets.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    print(f"VisualDL board for {', '.join(args.logdir)} on http://127.0.0.1:{args.port}"
          f"{public_path}/", flush=True)
    # Single-threaded like VisualDL's own server: its readers and caches are not thread-safe.
    app.run(host="127.0.0.1", port=args.port, threaded=False, debug=False,
            use_reloader=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
