"""Training page targets (issue 16), measured with the page's own presets and default settings.

    python bench/train.py accuracy [--preset tiny|shipped|both]   held-out accuracy and training time
    python bench/train.py memory [--ahead]                       server + fork server + child memory in two trainings
    python bench/train.py explorer [--runs 100 --rounds 10]      capture() time while a training runs and is paused
    python bench/train.py session-memory [--cold]                two learners' sessions on a real server (Chromium)

Needs $CNNVIZ_DATA_DIR (MNIST). Each training runs as on the server: in its own process, with the page's thread
count and priority (cnnviz.training.child.THREADS, NICE).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import multiprocessing.forkserver
import os
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
import torch

from cnnviz.devserver import CHROMIUM, CHROMIUM_ARGS, IDLE
from cnnviz.engine.builder import PRESETS
from cnnviz.engine.datasets import dataset, load_arrays
from cnnviz.engine.predict import evaluate_arrays
from cnnviz.training import jobs
from cnnviz.training.child import NICE

NAMES = {"tiny": "Tiny: two convolutions", "shipped": "Shipped MNIST architecture (18k parameters)"}
TARGETS = {"tiny": "97% within 120 s", "shipped": "98.5% after one epoch"}


def mb(n_bytes: int) -> float:
    return n_bytes / 2**20


def run_job(preset: str) -> tuple[jobs.TrainingJob, float]:
    """Start the preset with the page's defaults as a job (its own process); return it once it is running, and the
    seconds its process took to start (imports, data, the network)."""
    cfg = PRESETS[NAMES[preset]]
    job = jobs.JobRegistry(limit=1).submit("bench", cfg, jobs.default_settings(NAMES[preset]), dataset="mnist")
    started = time.perf_counter()
    while job.state in ("queued", "starting"):
        time.sleep(0.05)
    return job, time.perf_counter() - started


def accuracy(preset: str) -> None:
    job, start_s = run_job(preset)
    job.wait()
    model, card = job.result()
    test_x, test_y = load_arrays("mnist", "test")
    full = evaluate_arrays(model, test_x, test_y, card)
    s = job.settings
    print(f"{preset}: {job.state}, {job.step} steps of batch {s.batch_size} ({s.optimizer}, lr {s.lr:g} "
          f"{s.schedule}, augment {s.augment}, seed {s.seed}), {jobs.THREADS} torch thread(s), its process started "
          f"in {start_s:.1f} s")
    print(f"  training time {job.train_seconds:.1f} s ({job.step / job.train_seconds:.1f} steps/s); "
          f"held-out accuracy {full.accuracy:.2f}% on the {full.count:,} MNIST test images "
          f"(target {TARGETS[preset]})")


def pss_rss(process: psutil.Process | None) -> tuple[float, float, float]:
    """(PSS, anonymous PSS, RSS) in MB from /proc/PID/smaps_rollup; zeros for no process or one that has exited.

    PSS shares each page out among the processes that map it, so the sum over processes is what they take together
    (RSS counts torch's libraries and the pages a fork server shares with its children once in each). Its file part
    also moves as unrelated processes map the same libraries; the anonymous part is shared only by forking."""
    try:
        text = Path(f"/proc/{process.pid}/smaps_rollup").read_text() if process is not None else ""
    except OSError:
        text = ""
    kb = {line.split()[0]: int(line.split()[1]) for line in text.splitlines()[1:]}
    return tuple(mb(1024 * kb.get(key, 0)) for key in ("Pss:", "Pss_Anon:", "Rss:"))


def fork_server() -> psutil.Process | None:
    pid = multiprocessing.forkserver._forkserver._forkserver_pid  # private, read only: nothing public says it
    return psutil.Process(pid) if pid is not None and psutil.pid_exists(pid) else None


def memory_of_one_training(server: psutil.Process, label: str) -> None:
    """One tiny training, sampled every 0.2 s (a short peak can fall between samples; the child's VmHWM cannot)."""
    def now() -> list[float]:  # PSS, anonymous PSS: server, fork server
        return [*pss_rss(server)[:2], *pss_rss(fork_server())[:2]]

    before = now()
    job, start_s = run_job("tiny")
    child = psutil.Process(job.process.pid)
    peak = [0.0] * 7  # PSS all, anonymous PSS all, server, fork server, child, child RSS, child VmHWM
    while not job.done():
        try:
            status = Path(f"/proc/{child.pid}/status").read_text()
        except OSError:  # it has just exited
            break
        if "VmHWM:" not in status:  # a zombie: it has exited
            break
        c, (s, s_anon, f, f_anon) = pss_rss(child), now()
        hwm = int(status.split("VmHWM:")[1].split()[0]) / 1024
        sample = (s + f + c[0], s_anon + f_anon + c[1], s, f, c[0], c[2], hwm)
        peak = [max(a, b) for a, b in zip(peak, sample, strict=True)]
        time.sleep(0.2)
    job.wait()
    del job, child  # what ending the session does: its job (and the model it holds) is dropped
    gc.collect(), ctypes.CDLL("libc.so.6").malloc_trim(0)  # what cnnviz.heap_trim does on the server
    after = now()
    print(f"  {label}: its process started in {start_s:.1f} s. Server + fork server + child at most {peak[0]:.0f} MB "
          f"PSS: +{peak[0] - before[0] - before[2]:.0f} MB over server + fork server before it ({before[0]:.0f} + "
          f"{before[2]:.0f} MB), +{peak[0] - before[0]:.0f} over the server alone; anonymous PSS "
          f"+{peak[1] - before[1] - before[3]:.0f} / +{peak[1] - before[1]:.0f} MB. At most: server {peak[2]:.0f}, "
          f"fork server {peak[3]:.0f}, child {peak[4]:.0f} MB PSS ({peak[5]:.0f} MB RSS, VmHWM {peak[6]:.0f} MB). "
          f"Once dropped: server {after[0] - before[0]:+.0f} MB PSS ({after[1] - before[1]:+.0f} anonymous), "
          f"server + fork server {after[0] + after[2] - before[0] - before[2]:+.0f} MB ({load()})")


def memory(ahead: bool) -> None:
    """The server is this process. Its trainings' processes are forked from the fork server, which it starts (with
    ``ahead``: before the first training, and this waits for its imports; otherwise the first training starts it)."""
    server = psutil.Process()
    dataset("mnist", "test"), load_arrays("mnist", "test")  # torchvision and MNIST's test set, as a warm server
    gc.collect(), ctypes.CDLL("libc.so.6").malloc_trim(0)
    pss, anon, rss = pss_rss(server)
    print(f"memory: server warm (MNIST read once, as the explorer does) {pss:.0f} MB PSS ({anon:.0f} anonymous), "
          f"{rss:.0f} MB RSS ({load()})")
    if ahead:
        jobs.start_fork_server()
        probe = jobs.CONTEXT.Process(target=os.getpid)  # forked once the fork server has imported torch
        probe.start(), probe.join()
        time.sleep(0.5)
        f_pss, f_anon, f_rss = pss_rss(fork_server())
        print(f"  fork server started ahead: {f_pss:.0f} MB PSS ({f_anon:.0f} anonymous), {f_rss:.0f} MB RSS; server "
              f"+ fork server +{pss_rss(server)[0] + f_pss - pss:.0f} MB PSS over the server warm")
    memory_of_one_training(server, "first training" + ("" if ahead else " (it starts the fork server)"))
    memory_of_one_training(server, "second training")
    others = [p for p in server.children() if p.pid != getattr(fork_server(), "pid", None)]
    print(f"  other child processes: {len(others)} (multiprocessing's resource tracker), "
          f"{sum(pss_rss(p)[0] for p in others):.0f} MB PSS")


def explorer(runs: int, rounds: int) -> None:
    """capture() timed in this process (the server) while a training's process trains, and while it is paused, in
    alternating rounds (the machine's speed drifts between runs; alternating cancels most of it)."""
    from app import TORCH_THREADS
    from cnnviz import heap_trim
    from cnnviz.engine.capture import capture

    heap_trim.tune()  # the server's allocator settings and torch threads (app.py)
    torch.set_num_threads(TORCH_THREADS)
    from cnnviz.engine.checkpoints import load_model

    model, _ = load_model("mnist")
    x = torch.randn(1, 1, 28, 28)

    def timed(n: int) -> list[float]:
        out = []
        for _ in range(n):
            t = time.perf_counter()
            capture(model, x)
            out.append(time.perf_counter() - t)
        return out

    timed(50)
    alone = statistics.median(timed(runs))
    job, _ = run_job("shipped")
    busy, paused = [], []
    for _ in range(rounds):
        job.resume()
        step = job.step
        while job.step < step + 3:  # training again, not only resumed
            time.sleep(0.05)
        busy += timed(runs)
        job.pause()
        while job.state != "paused":
            time.sleep(0.05)
        paused += timed(runs)
    steps = job.step
    job.stop()
    job.wait()
    busy_ms, paused_ms = 1000 * statistics.median(busy), 1000 * statistics.median(paused)
    print(f"explorer: MNIST capture() median {busy_ms:.2f} ms while a training runs in its process, {paused_ms:.2f} "
          f"ms while it is paused; ratio {busy_ms / paused_ms:.2f}x (target at most 1.5x); {alone * 1000:.2f} ms "
          f"before it started. {rounds} rounds of {runs} captures each way, {steps} training steps in all; capture "
          f"on {torch.get_num_threads()} torch threads, training on {jobs.THREADS} at nice {NICE}")


SESSION_TTL_S = 10  # server.disconnectedSessionTTL for session-memory: a closed session's state is dropped soon


def server_tree(pid: int) -> list[float]:
    """[PSS, anonymous PSS, RSS, the fork server's PSS] in MB: the server and every process under it (fork server,
    resource tracker, trainings), summed."""
    total = [0.0] * 4
    for process in (top := psutil.Process(pid)), *top.children(recursive=True):
        sizes = pss_rss(process)
        try:
            fork = "multiprocessing.forkserver" in " ".join(process.cmdline())
        except psutil.Error:  # it has just exited
            fork = False
        total = [a + b for a, b in zip(total, (*sizes, sizes[0] if fork else 0.0), strict=True)]
    return total


def learner(browser, url: str, pid: int) -> tuple[list[float], str]:
    """A learner's session: opens the Train page, picks the tiny preset, trains it with the page's defaults and
    sees the result. Returns the process tree's largest [PSS, anonymous PSS, RSS], sampled every 0.2 s, and the
    status line; the session ends with its browser context."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = context.new_page()
        page.set_default_timeout(180_000)
        page.goto(f"{url}/train")
        page.get_by_text("Total:").first.wait_for()
        page.wait_for_selector(IDLE)
        page.locator(".st-key-train_preset input").first.click()
        page.get_by_role("option", name=NAMES["tiny"], exact=True).click()
        page.wait_for_function("() => document.querySelector('.st-key-train_steps input')?.value === '300'")
        page.wait_for_selector(IDLE)
        page.locator(".st-key-train_start button").click()
        peak, deadline = [0.0] * 3, time.monotonic() + 600
        while time.monotonic() < deadline:  # until the page shows the trained model (or the training failed)
            peak = [max(a, b) for a, b in zip(peak, server_tree(pid)[:3], strict=True)]
            status, done = page.evaluate("""() => [
                document.querySelector('.st-key-train_status')?.innerText.trim() || '',
                document.body.innerText.includes('Your model scores')]""")
            if done or re.search(r"stopped|failed", status):
                break
            time.sleep(0.2)
        return peak, status
    finally:
        context.close()


def session_memory(cold: bool) -> None:
    """Issue 16's target on a real `streamlit run`, measured as bench/load.py measures sessions: from "warm" (a
    browser session has visited every page once and closed: the Train page too, which starts the fork server, unless
    ``cold``) to the peak of a learner's session that trains the tiny preset from the page, and to "after" (that
    session closed, its state dropped and the heap trimmed). Two learners, one after the other."""
    from playwright.sync_api import sync_playwright

    from app import ALL_PAGES
    from bench.load import SETTLE_S
    from cnnviz.devserver import start_server, stop_server

    server = start_server(env={"CNNVIZ_DATA_DIR": os.environ.get("CNNVIZ_DATA_DIR", ""),
                               "STREAMLIT_SERVER_DISCONNECTED_SESSION_TTL": str(SESSION_TTL_S)})
    pid, drain = server.process.pid, SESSION_TTL_S + 10 + SETTLE_S  # load.py's wait once its sessions closed
    visited = [spec for spec in ALL_PAGES[1:] if not (cold and spec.url_path == "train")]
    print(f"session-memory: {server.url} (streamlit run), session TTL {SESSION_TTL_S} s; the warm-up session visits "
          f"home, {', '.join(spec.url_path for spec in visited)}; each measurement {drain:.0f} s after a session "
          "closed")

    def settled(label: str) -> list[float]:
        time.sleep(drain)
        pss, anon, rss, fork = now = server_tree(pid)
        print(f"  {label}: {pss:.0f} MB PSS ({anon:.0f} anonymous), {rss:.0f} MB RSS; the fork server {fork:.0f} MB "
              f"PSS ({load()})")
        return now

    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(180_000)
            page.goto(server.url)
            page.wait_for_selector(IDLE)
            for spec in visited:  # from the sidebar: one session; its title shows once the page's run has begun
                page.locator(f"[data-testid='stSidebarNav'] a[href$='/{spec.url_path}']").click()
                page.locator("[data-testid='stMainBlockContainer'] h1", has_text=spec.title).wait_for()
                page.wait_for_selector(IDLE)
            page.close()
            warm = after = settled("warm")
            for n in (1, 2):
                peak, status = learner(browser, server.url, pid)
                print(f"  learner {n} ({status}): at most {peak[0]:.0f} MB PSS, {peak[0] - warm[0]:+.0f} over warm "
                      f"(target at most +300; anonymous {peak[1] - warm[1]:+.0f}; {peak[0] - after[0]:+.0f} over the "
                      f"server before this session); {peak[2]:.0f} MB RSS, {peak[2] - warm[2]:+.0f} ({load()})")
                after = settled(f"learner {n}'s session ended")
                print(f"    {after[0] - warm[0]:+.0f} MB PSS over warm (target within 50 MB; anonymous "
                      f"{after[1] - warm[1]:+.0f}), {after[2] - warm[2]:+.0f} MB RSS; the fork server "
                      f"{after[3] - warm[3]:+.0f} MB PSS")
            browser.close()
    finally:
        left = psutil.Process(pid).children(recursive=True) if server.process.poll() is None else []
        stop_server(server)
        _, alive = psutil.wait_procs(left, timeout=20)
        for process in alive:
            process.kill()
        print(f"  server stopped; {len(alive)} of its {len(left)} child processes had to be killed")


def load() -> str:
    return "load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["accuracy", "memory", "explorer", "session-memory"])
    parser.add_argument("--preset", choices=["tiny", "shipped", "both"], default="both")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--ahead", action="store_true", help="memory: start the fork server before the first training")
    parser.add_argument("--cold", action="store_true", help="session-memory: the warm-up skips the Train page (the "
                        "first learner's session starts the fork server)")
    args = parser.parse_args()
    if args.what == "accuracy":
        for preset in (["tiny", "shipped"] if args.preset == "both" else [args.preset]):
            accuracy(preset)
    elif args.what == "memory":
        memory(args.ahead)
    elif args.what == "session-memory":
        session_memory(args.cold)
    else:
        explorer(args.runs, args.rounds)
    print(f"({load()} on {os.cpu_count()} cores at the end)")


if __name__ == "__main__":
    main()
