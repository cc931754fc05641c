"""``alexfeat serve`` as a user runs it: a real process on a free loopback port, stopped with Ctrl+C; and the
errors a user can cause before it serves."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import REPO
from tests.serve.conftest import CLASSES, PER_CLASS, run_cli


def test_serve_answers_once_loaded_and_stops_on_ctrl_c(index_dir: tuple[Path, Path]) -> None:
    _, idx = index_dir
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "extractor.cli", "serve", str(idx), "--port", "0", "--max-batch", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        assert f"{CLASSES.__len__() * PER_CLASS} images, IDMap2,Flat over 256-d vectors" in lines[0], lines
        url = re.search(r"search page (http://127\.0\.0\.1:\d+/)", lines[1])[1]
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(url + "api/health", timeout=5)
                break
            except httpx.ConnectError:  # refused until uvicorn listens (the model is loaded by then)
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        assert health.json() == {"status": "ok"}
        info = httpx.get(url + "api/info").json()
        assert info["count"] == len(CLASSES) * PER_CLASS and info["max_batch"] == 4
        page = httpx.get(url)
        assert page.headers["content-type"].startswith("text/html") and "<title>alexfeat search</title>" in page.text
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "Application shutdown complete" in err
    assert "stopped; served 0 image queries in 0 forward passes" in out


def test_serve_errors_before_serving(index_dir: tuple[Path, Path], tmp_path: Path) -> None:
    _, idx = index_dir
    code, output = run_cli("serve", tmp_path / "none")
    assert code == 1 and output.startswith("Error: ") and "Traceback" not in output
    code, output = run_cli("serve", idx, "--images-root", tmp_path / "gone", "--port", "0")
    assert code == 1 and "the images folder" in output and "--images-root" in output
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, output = run_cli("serve", idx, "--port", port)
    assert code == 1 and f"Error: cannot listen on 127.0.0.1:{port}" in output and "choose another --port" in output
    code, output = run_cli("serve", idx, "--max-upload-mb", "0")
    assert code == 2 and "--max-upload-mb" in output
