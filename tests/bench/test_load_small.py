"""Many users at once (issue 8), small enough for the test suite.

- Backend: many threads push different pictures through ``preprocess`` + ``capture`` on ONE shared model (as the
  cached model is shared by every browser session); each result equals the same input run alone, and no hook,
  thread or file handle is left behind.
- Server: ``bench/load.py`` with 8 real Streamlit sessions (websocket clients speaking the app's protocol) for ~20 s
  against one server: zero exceptions, every number the page shows equals what its input gives alone, and the
  server's threads, file handles and memory come back. A wrong number must be caught: a test feeds the same client
  a deliberately wrong reference and expects mismatches.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from PIL import Image, ImageDraw

from cnnviz.engine.capture import capture
from cnnviz.engine.checkpoints import CheckpointError, load_model, save
from cnnviz.engine.models import REGISTRY, build_model, new_card
from cnnviz.engine.pictures import preprocess
from tests.support import randomize_batchnorm


def shared_model(name: str):
    """The committed checkpoint when present, else random weights with non-trivial BatchNorm statistics."""
    try:
        return load_model(name)
    except CheckpointError:
        torch.manual_seed(0)
        model = randomize_batchnorm(build_model(name), seed=0).eval()
        return model, new_card(name, model)


def picture(name: str, k: int) -> Image.Image:
    """Input number k: a different stroke for MNIST, a different photo-like picture for CIFAR-10."""
    rng = np.random.default_rng(k)
    if name == "mnist":
        img = Image.new("L", (280, 280), 0)
        points = [tuple(int(v) for v in rng.integers(40, 240, 2)) for _ in range(4)]
        ImageDraw.Draw(img).line(points, fill=255, width=22)
        return img
    return Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))


def hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


@pytest.mark.slow
@pytest.mark.parametrize("name", list(REGISTRY))
def test_threads_through_preprocess_and_capture_match_single_runs_and_leak_nothing(name):
    model, card = shared_model(name)
    n_inputs, n_threads, rounds = 12, 8, 3
    alone = {}
    for k in range(n_inputs):  # each input run alone, one after another
        trace = capture(model, preprocess(picture(name, k), card))
        alone[k] = (trace.logits, trace.input_grad, trace.layers[0].weight_grad)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    threads_before = threading.active_count()
    proc = psutil.Process()
    fds_before = proc.num_fds()

    def job(k: int):
        x = preprocess(picture(name, k), card)  # (1, C, H, W)
        trace = capture(model, x)
        return k, trace.logits, trace.input_grad, trace.layers[0].weight_grad

    jobs = [k % n_inputs for k in range(n_inputs * rounds)]
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        results = list(pool.map(job, jobs))
    assert len(results) == len(jobs)
    for k, logits, input_grad, weight_grad in results:
        np.testing.assert_allclose(logits, alone[k][0], rtol=1e-5, atol=1e-6, err_msg=f"input {k}")
        np.testing.assert_allclose(input_grad, alone[k][1], rtol=1e-4, atol=1e-7, err_msg=f"input {k}")
        np.testing.assert_allclose(weight_grad, alone[k][2], rtol=1e-4, atol=1e-7, err_msg=f"input {k}")
    assert len({round(float(r[1].max()), 4) for r in results}) > 1, "the inputs must differ, or this proves nothing"
    assert hook_count(model) == 0, "a hook was left on the shared model"
    assert all(p.grad is None for p in model.parameters()), "a capture wrote .grad on the shared model"
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), f"the shared model's {key} changed"
    assert not model.training
    assert threading.active_count() == threads_before, "a thread was left behind"
    assert proc.num_fds() <= fds_before, "a file handle was left behind"


@pytest.fixture(scope="module")
def load_checkpoints(tmp_path_factory) -> Path:
    """The committed checkpoints when MNIST's is there, else random models (varied predictions) in a temp folder."""
    from cnnviz.engine.checkpoints import checkpoint_dir

    if (checkpoint_dir() / "mnist.safetensors").is_file():
        try:
            load_model("mnist")
            return checkpoint_dir()
        except CheckpointError:
            pass
    folder = tmp_path_factory.mktemp("load_checkpoints")
    for name in REGISTRY:
        model, card = shared_model(name)
        save(model, card, folder / f"{name}.safetensors")
    return folder


@pytest.mark.slow
def test_eight_protocol_sessions_for_20_seconds(load_checkpoints, capsys):
    """Eight real Streamlit sessions (websocket clients speaking Streamlit's protocol, bench/protocol.py) against one
    server: drawing, samples, the backprop slider, the other pages; every number checked against a single run."""
    from bench.load import run_load
    from bench.report import summary

    result = run_load(sessions=8, seconds=20, checkpoint_dir=load_checkpoints, timeout_s=180, session_ttl_s=2,
                      cifar_share=0.25, log=lambda *_: None)
    report = summary(result)
    with capsys.disabled():
        print("\n" + report)
    assert not result.problems, report  # no exception, no wrong number, no timeout in any session
    assert len(result.updates) >= 4, report
    assert {kind for kind, _ in result.updates} & {"draw", "sample"}, report
    assert result.checks >= 4, report  # numbers really were compared with single-input runs
    start, after = result.stats["start"], result.stats["after"]
    assert after.fds <= start.fds + 4, report  # the closed sessions' sockets are gone
    assert after.threads <= start.threads + 8, report  # bounded pools only, nothing per session
    assert result.memory_growth_mb <= 200, report


@pytest.mark.slow
def test_the_load_checks_catch_a_wrong_number(load_checkpoints):
    """The load test's comparison can fail: a session whose reference disagrees with the page (here the reference's
    predicted digit is shifted by one) reports every compared drawing as a mismatch, and no other problem."""
    from bench.oracle import Oracle
    from bench.session import ProtocolSession, Tally
    from cnnviz.devserver import start_server, stop_server

    oracle = Oracle(load_checkpoints)
    honest = oracle.drawing

    def shifted(png: bytes):
        line, loss = honest(png)
        digit = int(line.split()[1])
        return line.replace(f"Prediction: {digit} ", f"Prediction: {(digit + 1) % 10} ", 1), loss

    oracle.drawing = shifted
    tally = Tally()
    server = start_server(env={"CNNVIZ_CHECKPOINT_DIR": str(load_checkpoints)})

    async def learner() -> None:
        session = ProtocolSession(0, server.url, tally, oracle, "mnist", timeout_s=120, seed=0, think=(0, 0))
        await session.open()
        try:
            for stroke in ("seven", "L", "two"):
                await session.draw(stroke)
        finally:
            await session.client.close()

    try:
        with ThreadPoolExecutor(1) as pool:  # a thread of its own: a browser fixture may run a loop in this one
            pool.submit(asyncio.run, learner()).result()
    finally:
        stop_server(server)
    assert tally.checks == 3
    assert [p.kind for p in tally.problems] == ["mismatch"] * 3, tally.problems
    assert all("alone 'Prediction:" in p.detail for p in tally.problems)


@pytest.mark.slow
@pytest.mark.browser
def test_a_deep_link_as_first_request_keeps_app_navigation_for_everyone(browser):
    """A fresh server whose first visitor opens /explorer (a link a teacher shared), then another student.

    Every page must run under app.py's st.navigation (its section titles in the sidebar, its page config), for
    both sessions and after sidebar clicks, not as a bare file of Streamlit's automatic pages/ listing.
    """
    from app import SECTIONS
    from cnnviz.devserver import IDLE, start_server, stop_server
    from tests.support import open_page

    def sidebar_ok(page, what: str) -> None:
        page.wait_for_selector(IDLE)
        page.wait_for_function("() => document.querySelectorAll(\"[data-testid='stSidebarNav'] a\").length > 0")
        nav = page.locator("[data-testid='stSidebarNav']").inner_text()
        assert all(section in nav for section in SECTIONS), f"{what}: sidebar shows {' '.join(nav.split())!r}"
        assert page.locator("[data-testid='stException']").count() == 0

    server = start_server()
    contexts = []
    try:
        for student in range(2):
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            contexts.append(context)
            page = context.new_page()
            page.set_default_timeout(60_000)
            open_page(page, f"{server.url}/explorer")
            sidebar_ok(page, f"student {student} opening /explorer")
            for target in ("graph", "explorer"):
                page.locator(f"[data-testid='stSidebarNav'] a[href$='/{target}']").click()
                page.wait_for_url(f"**/{target}**")  # pages write their state into the query string
                sidebar_ok(page, f"student {student} clicking {target}")
    finally:
        for context in contexts:
            context.close()
        stop_server(server)
