"""The reference application: a user-profile service wired from every scalepatterns block.

`python -m examples.app` serves it on embedded defaults (SQLite shards with a read-only
replica each, an in-process cache, limiter and broker); environment variables move each
piece to a real server (see `examples/app/settings.py` and `docs/app.md`).
"""
