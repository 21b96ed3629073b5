"""Start and stop the app for benchmarks and tests, on loopback: one `streamlit run`, or `python -m cnnviz.serve`
(HAProxy in front of N replicas)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=timeout) as resp:
            return resp.read().decode().strip() == "ok"
    except OSError:
        return False


class StreamlitServer:
    """A started server: its URL, its process (streamlit, or cnnviz.serve) and its log."""

    def __init__(self, url: str, process: subprocess.Popen, log_path: Path) -> None:
        self.url, self.process, self.log_path = url, process, log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]


def start_server(app: str = "app.py", env: dict[str, str] | None = None, timeout: float = 60.0,
                 replicas: int = 0) -> StreamlitServer:
    """One `streamlit run` of ``app``, or with ``replicas`` > 0 `python -m cnnviz.serve` (which says when all its
    replicas answer), on a free port; returns once it is ready."""
    port = free_port()
    cmd = ([sys.executable, "-m", "cnnviz.serve", "--replicas", str(replicas), "--port", str(port), "--address",
            "127.0.0.1"] if replicas else
           [sys.executable, "-m", "streamlit", "run", app, "--server.headless", "true", "--server.address",
            "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none"])
    log_path = Path(tempfile.mkdtemp(prefix="cnnviz-server-")) / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    server = StreamlitServer(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + timeout * max(1, replicas)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{cmd[2]} exited with {process.returncode}:\n{server.log()}")
        if healthy(server.url) and (not replicas or f"all {replicas} replicas up" in server.log()):
            return server
        time.sleep(0.25)
    stop_server(server)
    raise RuntimeError(f"{cmd[2]} was not ready within {deadline:.0f} s:\n{server.log()}")


def stop_server(server: StreamlitServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=10)
