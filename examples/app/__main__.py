"""`python -m examples.app [serve|worker] [--host H] [--port P]`.

``serve`` (the default) runs the HTTP service with uvicorn; ``worker`` runs the email and
analytics workers only (on one event loop in the async build). Both read their
configuration from `SP_APP_*` variables.
"""

from __future__ import annotations

import argparse


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

    print(f"serving the {settings.build} build on http://{args.host}:{args.port}", flush=True)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
