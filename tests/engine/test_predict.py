"""The one batched prediction helper: probabilities equal the model's softmax in eval mode (float64, any batch size),
every module's train/eval mode comes back exactly as it was (after an exception too), and nothing is learned."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from cnnviz.engine.predict import predict_logits, predict_probs
from tests.support import randomize_batchnorm, small_cnn


def model64() -> torch.nn.Module:
    return randomize_batchnorm(small_cnn()).double()


def inputs(n: int = 7) -> torch.Tensor:
    return torch.randn(n, 2, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)  # (N, C, H, W)


def modes(model: torch.nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in model.named_modules()}


@pytest.mark.parametrize("batch_size", [1, 3, 7, 500])
def test_probabilities_are_the_models_softmax_in_eval_mode(batch_size):
    model, x = model64(), inputs()
    with torch.no_grad():
        expected = torch.softmax(model.eval()(x), dim=1)  # (N, K) float64
    model.train()  # batch norm on batch statistics would give other numbers: the helper must predict in eval mode
    probs = predict_probs(model, x, batch_size)
    assert probs.dtype == torch.float64 and not probs.requires_grad
    assert_close(probs, expected, rtol=1e-12, atol=1e-15)
    assert_close(predict_logits(model, x, batch_size).softmax(1), expected, rtol=1e-12, atol=1e-15)


def test_inputs_are_prepared_and_cast_to_the_models_dtype():
    model, x = model64(), inputs()
    with torch.no_grad():
        expected = torch.softmax(model(2 * x), dim=1)
    probs = predict_probs(model, x.float(), 3, prepare=lambda batch: 2 * batch)
    assert_close(probs, expected, rtol=1e-6, atol=1e-7)  # the inputs passed through float32


@pytest.mark.parametrize("start", ["eval", "train", "mixed"])
def test_every_modules_mode_comes_back_as_it_was_and_nothing_is_learned(start):
    model = model64()
    model.train(start != "eval")
    if start == "mixed":
        model.bn1.eval()
        model.fc.train()
    before_modes = modes(model)
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    predict_probs(model, inputs(), 2)
    assert modes(model) == before_modes
    for k, v in model.state_dict().items():
        assert torch.equal(v, before_state[k]), k  # weights and batch norm's running statistics
    assert all(p.grad is None for p in model.parameters())


def test_modes_come_back_after_an_exception_and_empty_input_is_refused():
    model = model64().train()
    model.bn1.eval()
    before_modes = modes(model)

    def broken(batch: torch.Tensor) -> torch.Tensor:
        assert not any(m.training for m in model.modules()), "predicted in eval mode"
        raise RuntimeError("a bad batch")

    with pytest.raises(RuntimeError, match="a bad batch"):
        predict_probs(model, inputs(), 3, prepare=broken)
    assert modes(model) == before_modes
    with pytest.raises(ValueError, match="no inputs"):
        predict_probs(model, inputs(0))
