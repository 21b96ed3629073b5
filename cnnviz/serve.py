"""Serve a class: N `streamlit run app.py` replicas behind HAProxy, started and stopped by one command.

    python -m cnnviz.serve [--replicas N] [--port 8501] [--address 0.0.0.0]
    python -m cnnviz.serve --backends app1:8501,app2:8501 --port 8501     # HAProxy only, replicas elsewhere

HAProxy's configuration comes from deploy/haproxy.cfg.template (sticky cookie, websockets, health checks); a replica
that exits is started again on its port. Starts processes only: imports neither torch nor streamlit. docs/serving.md.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "deploy" / "haproxy.cfg.template"


def haproxy_config(bind: str, backends: list[str]) -> str:
    """The HAProxy configuration for ``backends`` (host:port each), listening on ``bind`` (address:port)."""
    servers = [f"    server r{i} {addr} cookie r{i}" for i, addr in enumerate(backends, 1)]
    return string.Template(TEMPLATE.read_text()).substitute(BIND=bind, SERVERS="\n".join(servers))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str, timeout: float = 2.0) -> bool:
    """Whether the Streamlit server (or the balancer) at ``url`` answers its health check."""
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=timeout) as resp:
            return resp.read().strip() == b"ok"
    except OSError:
        return False


class Child:
    """A supervised process: its command, its log file, its restarts."""

    def __init__(self, name: str, cmd: list[str], log_path: Path, env: dict[str, str], address: str = "") -> None:
        self.name, self.cmd, self.log_path, self.env, self.address = name, cmd, log_path, env, address
        self.process: subprocess.Popen | None = None
        self.started, self.quick_exits = 0.0, 0  # exits within 10 s of a start, in a row

    def start(self) -> None:
        self.started = time.monotonic()
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(self.cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        print(f"{self.name}: pid {self.process.pid}" + (f", {self.address}" if self.address else ""), flush=True)

    def exited(self) -> int | None:
        return self.process.poll()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()

    def wait(self, until: float) -> None:
        try:
            self.process.wait(timeout=max(0.1, until - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def replica_command(port: int) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.address",
            "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none"]


def serve(replicas: int, port: int, address: str, backends: list[str], haproxy: str) -> int:
    stopping: list[int] = []

    def stop(signum: int, _frame) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    folder = Path(tempfile.mkdtemp(prefix="cnnviz-serve-"))
    # One cookie secret for all replicas: a browser moved to another replica keeps a valid XSRF cookie.
    env = {**os.environ, "STREAMLIT_SERVER_COOKIE_SECRET": os.environ.get("STREAMLIT_SERVER_COOKIE_SECRET")
           or secrets.token_hex(32)}
    # One line and one set of places for the Train page's trainings on this machine: lock files all replicas share
    # (cnnviz.training.places), so "at most N trainings at once" counts every replica's.
    env.setdefault("CNNVIZ_TRAINING_PLACES", str(folder / "training-places"))
    Path(env["CNNVIZ_TRAINING_PLACES"]).mkdir(parents=True, exist_ok=True)
    children = []
    for i in range(replicas):
        port_i = free_port()
        backends.append(f"127.0.0.1:{port_i}")
        children.append(Child(f"replica {i + 1}", replica_command(port_i), folder / f"replica{i + 1}.log", env,
                              backends[-1]))
    config = folder / "haproxy.cfg"
    config.write_text(haproxy_config(f"{address}:{port}", backends))
    children.append(Child("haproxy", [haproxy, "-f", str(config), "-db"], folder / "haproxy.log", env))
    print(f"cnnviz.serve: {replicas or len(backends)} replicas behind HAProxy on {address}:{port}; config and logs in "
          f"{folder}", flush=True)
    up, began = False, time.monotonic()
    try:
        for child in children[:-1]:
            child.start()
        while not stopping:
            # HAProxy starts once every replica answers (its servers start UP; before, a replica still starting
            # would be marked down and its first learners sent elsewhere), or after 120 s whatever their state.
            if not up and (all(healthy(f"http://{b}") for b in backends) or time.monotonic() - began > 120):
                up = True
                children[-1].start()
                print(f"cnnviz.serve: all {len(backends)} replicas up; open http://{address}:{port}", flush=True)
            for child in children if up else children[:-1]:
                code = child.exited()
                if code is not None and not stopping:
                    child.quick_exits = child.quick_exits + 1 if time.monotonic() - child.started < 10 else 0
                    if child.quick_exits >= 3:  # it cannot start (a port in use, a broken app): say so and stop
                        print(f"{child.name} exits as soon as it starts; giving up. Its log ({child.log_path}):\n"
                              + child.log_path.read_text(errors="replace")[-2000:], flush=True)
                        return 1
                    print(f"{child.name} (pid {child.process.pid}) exited with {code}; starting it again "
                          f"(log: {child.log_path})", flush=True)
                    child.start()
            time.sleep(0.5)
    finally:
        print("cnnviz.serve: stopping HAProxy and the replicas", flush=True)
        for child in reversed(children):  # HAProxy first: no new requests to replicas going away
            if child.process is not None:
                child.stop()
        until = time.monotonic() + 15
        for child in children:
            if child.process is not None:
                child.wait(until)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=os.cpu_count() or 1,
                        help="Streamlit servers to start on this machine (default: one per core)")
    parser.add_argument("--port", type=int, default=8501, help="HAProxy's port (default 8501)")
    parser.add_argument("--address", default="0.0.0.0", help="HAProxy's address (default: every interface)")
    parser.add_argument("--backends", default="",
                        help="comma-separated host:port of replicas started elsewhere (then none is started here)")
    parser.add_argument("--haproxy", default=shutil.which("haproxy") or "/usr/sbin/haproxy")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    replicas = 0 if backends else args.replicas
    if replicas < 0 or (replicas == 0 and not backends):
        parser.error("--replicas must be at least 1 (or give --backends)")
    if not Path(args.haproxy).exists():
        parser.error(f"no HAProxy at {args.haproxy}: apt-get install haproxy (or pass --haproxy)")
    return serve(replicas, args.port, args.address, backends, args.haproxy)


if __name__ == "__main__":
    sys.exit(main())
