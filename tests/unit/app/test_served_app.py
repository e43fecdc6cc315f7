"""The app as an operator runs it: `python -m examples.app`."""

from __future__ import annotations

from pathlib import Path


def test_the_served_app_logs_each_request_and_its_stop_and_leaves_no_directory(
    tmp_path: Path,
) -> None:
    """`python -m examples.app`: an access line per request, a line when it stops, and the
    temporary directory of its embedded databases removed."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SP_APP_")},
        "TMPDIR": str(tmp_path),  # where its temporary directory goes
        "PYTHONPATH": str(Path(__file__).resolve().parents[3]),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "examples.app", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "the app did not start"
                time.sleep(0.2)
        assert [p.name[:7] for p in tmp_path.iterdir()] == ["sp-app-"]  # in use
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
    assert '"GET /health HTTP/1.1" 200' in output
    assert "the patterned build stops: 2 outbox relay(s), 2 worker group(s)" in output
    assert list(tmp_path.iterdir()) == []  # removed when it stopped
