"""`sdbake watch`: re-plan and re-run a recipe on every save of it or of a file it reads."""
from __future__ import annotations

import argparse
import sys

from sdbake.runner.commands import add_command, add_overrides, add_render_options

HELP = "re-render a recipe on every save (only the stages that changed), with an optional live page"
DESCRIPTION = ("Render RECIPE, then render it again whenever it or a file it reads (init images, masks, edits, "
               "wildcards, embeddings) is saved. The stage cache makes a re-render run only the stages whose "
               "inputs changed. An invalid recipe shows its error (file:line:col) and the last good render "
               "stays.")
EXAMPLES = [
    'sdbake watch recipes/demo.toml                      re-render on every save, log to the terminal',
    'sdbake watch recipes/demo.toml --serve              ... and a live page at http://127.0.0.1:8765/',
    'sdbake watch r.toml --serve --port 0 --out /tmp/o   any free port (printed), outputs under /tmp/o',
]


def register(subparsers: argparse._SubParsersAction) -> None:
    watch = add_command(subparsers, "watch", watch_command, HELP, EXAMPLES, description=DESCRIPTION)
    watch.add_argument("recipe", metavar="RECIPE", help="a recipe file (TOML or YAML)")
    add_overrides(watch)
    add_render_options(watch)
    watch.add_argument("--serve", action="store_true", help="serve a live page of stages, images and step "
                                                            "previews")
    watch.add_argument("--host", default="127.0.0.1", help="address to bind with --serve (default 127.0.0.1; "
                                                           "anything else exposes your renders)")
    watch.add_argument("--port", type=int, default=8765, help="port with --serve (default 8765; 0 = any free "
                                                              "port)")
    watch.add_argument("--poll", type=float, default=0.5, metavar="SECONDS", help="how often to look for "
                                                                                   "changes (default 0.5)")
    watch.add_argument("--quiet", "-q", action="store_true", help="log one line per render, not per stage")


def watch_command(args) -> int:
    import threading

    from sdbake.runner.watch.session import WatchSession
    from sdbake.schemas.errors import SdbakeError

    if not 0 <= args.port <= 65535:
        raise SdbakeError(f"--port {args.port}: must be 0-65535")
    if args.poll <= 0:
        raise SdbakeError(f"--poll {args.poll}: must be more than 0 seconds")
    session = WatchSession(args, log=lambda line: print(line, file=sys.stderr, flush=True))
    if args.serve:
        from sdbake.runner.watch.server import WatchServer, is_loopback
        try:
            server = WatchServer(session, args.host, args.port)
        except OSError as err:
            raise SdbakeError(f"cannot serve on {args.host}:{args.port}: {err.strerror or err}") from None
        server.start()
        if not is_loopback(args.host):
            print(f"warning: --host {args.host} makes the page (and the rendered images) reachable from other "
                  "machines", file=sys.stderr)
        print(f"serving {server.url}", file=sys.stderr, flush=True)
    print(f"watching {args.recipe} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    session.run_forever(threading.Event(), poll_s=args.poll)
    return 0
