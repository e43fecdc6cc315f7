"""`python -m examples.app [serve|worker] [--host H] [--port P]`.

``serve`` (the default) runs the HTTP service with uvicorn; ``worker`` runs the email and
analytics workers only (on one event loop in the async build). Both read their
configuration from `SP_APP_*` variables.
"""

from __future__ import annotations

import argparse
import logging


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.app")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "worker"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)

    from examples.app.settings import Settings

    settings = Settings.from_env()
    if args.command == "worker":
        from examples.app.services import Services
        from examples.app.workers import run_worker

        run_worker(Services.build(settings.with_(workers=True)))
        return
    import uvicorn

    from examples.app.app import create_app

    # uvicorn's own lines at INFO: startup, one access line per request, shutdown; the
    # app's lines (the workers' warnings, its stop line) beside them.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(name)s: %(message)s")
    print(f"serving the {settings.build} build on http://{args.host}:{args.port}", flush=True)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
