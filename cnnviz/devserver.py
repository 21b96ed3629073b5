"""Start the app on a free loopback port for tests and benchmarks (one `streamlit run`, or `python -m cnnviz.serve`
with replicas), and the headless Chromium that drives it: where it is, how it starts, and the selector that says a
page's run is over (Streamlit marks ``[data-testid='stApp']`` with its script state)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cnnviz.serve import ROOT, free_port, healthy

CHROMIUM = os.environ.get("CNNVIZ_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-gpu", "--no-sandbox", "--disable-quic", "--disable-dev-shm-usage",
]
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"


class StreamlitServer:
    def __init__(self, url: str, process: subprocess.Popen, log_path: Path) -> None:
        self.url, self.process, self.log_path = url, process, log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]


def start_server(app: str = "app.py", env: dict[str, str] | None = None, timeout: float = 60.0,
                 replicas: int = 0) -> StreamlitServer:
    """`streamlit run app` on a free port, or with ``replicas`` `python -m cnnviz.serve` (HAProxy in front of that
    many replicas, ready once it says all are up); returns once it answers."""
    port = free_port()
    cmd = ([sys.executable, "-m", "cnnviz.serve", "--replicas", str(replicas), "--address", "127.0.0.1"] if replicas
           else [sys.executable, "-m", "streamlit", "run", app, "--server.headless", "true", "--server.address",
                 "127.0.0.1", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"])
    log_path = Path(tempfile.mkdtemp(prefix="cnnviz-server-")) / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([*cmd, "--server.port" if not replicas else "--port", str(port)], cwd=ROOT,
                                   stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    server = StreamlitServer(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + timeout * max(1, replicas)
    while time.monotonic() < deadline and process.poll() is None:
        if healthy(server.url) and (not replicas or f"all {replicas} replicas up" in server.log()):
            return server
        time.sleep(0.25)
    stop_server(server)
    raise RuntimeError(f"{' '.join(cmd[1:4])} exited or did not answer in time:\n{server.log()}")


def stop_server(server: StreamlitServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=10)
