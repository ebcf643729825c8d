"""PaperSGD against the paper's update written out by hand, and against torch.optim.SGD."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from split_alexnet.model.split import SplitAlexNet
from split_alexnet.training.optim import PaperSGD, load_velocities, param_groups, velocities

MU, WD = 0.9, 0.0005


def _params(dtype: torch.dtype = torch.float32) -> list[nn.Parameter]:
    g = torch.Generator().manual_seed(0)
    shapes = [(4, 3), (5,), (2, 2, 3)]
    return [nn.Parameter(torch.randn(s, generator=g, dtype=dtype)) for s in shapes]


def _grads(step: int, params: list[nn.Parameter]) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]


def _hand_loop(params, lrs, dtype):
    """v ← μ·v − wd·ε·w − ε·g ; w ← w + v, one tensor at a time (PAPER.md, "Learning")."""
    ws = [p.detach().clone() for p in params]
    vs = [torch.zeros_like(w) for w in ws]
    for step, lr in enumerate(lrs):
        for i, g in enumerate(_grads(step, params)):
            vs[i] = MU * vs[i] - WD * lr * ws[i] - lr * g
            ws[i] = ws[i] + vs[i]
    return ws, vs


def _run(opt, params, lrs):
    for step, lr in enumerate(lrs):
        for group in opt.param_groups:
            group["lr"] = lr
        for p, g in zip(params, _grads(step, params), strict=True):
            p.grad = g
        opt.step()


LRS = [0.01] * 4 + [0.001] * 4  # an ε change mid-run, as at epoch 25 of the 2012 log


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_hand_loop_across_lr_change(dtype):
    params = _params(dtype)
    want_w, want_v = _hand_loop(params, LRS, dtype)
    opt = PaperSGD(params, lr=0.01, momentum=MU, weight_decay=WD)
    _run(opt, params, LRS)
    for p, w, v in zip(params, want_w, want_v, strict=True):
        assert p.dtype == dtype and opt.state[p]["momentum_buffer"].dtype == dtype
        # Within one ulp at |w| ~ 1: the fused multiply-adds of the vectorised
        # kernels may round the last bit differently from the loop.
        eps = torch.finfo(dtype).eps
        torch.testing.assert_close(p.detach(), w, rtol=0, atol=eps)
        torch.testing.assert_close(opt.state[p]["momentum_buffer"], v, rtol=0, atol=eps)


def test_float64_exact_on_dyadic_numbers():
    # With powers of two every product and sum is exact, so one step is bit-exact.
    w = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = PaperSGD([w], lr=0.25, momentum=0.5, weight_decay=0.125)
    for grad in ([0.5, 4.0], [1.0, 1.0]):
        w.grad = torch.tensor(grad, dtype=torch.float64)
        opt.step()
    # step 1: v = −1/32·w − 1/4·g = (−0.15625, −0.9375); w = (0.84375, −2.9375)
    # step 2: v = 0.5·v − 1/32·w − 1/4·g
    v1 = torch.tensor([-0.15625, -0.9375], dtype=torch.float64)
    w1 = torch.tensor([0.84375, -2.9375], dtype=torch.float64)
    v2 = 0.5 * v1 - w1 / 32 - 0.25
    assert torch.equal(opt.state[w]["momentum_buffer"], v2)
    assert torch.equal(w.detach(), w1 + v2)


def test_same_as_torch_sgd_while_lr_constant_and_different_after_change():
    a, b = _params(torch.float64), _params(torch.float64)
    paper = PaperSGD(a, lr=0.01, momentum=MU, weight_decay=WD)
    sgd = torch.optim.SGD(b, lr=0.01, momentum=MU, weight_decay=WD, dampening=0.0)
    _run(paper, a, LRS[:4])
    _run(sgd, b, LRS[:4])
    for p, q in zip(a, b, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
        # v_sgd = −v_paper / ε
        torch.testing.assert_close(
            sgd.state[q]["momentum_buffer"], -paper.state[p]["momentum_buffer"] / 0.01
        )
    _run(paper, a, [0.001])
    _run(sgd, b, [0.001])
    # PyTorch rescales the whole old velocity by the new ε at once; the paper does not.
    diff = max((p - q).abs().max().item() for p, q in zip(a, b, strict=True))
    assert diff > 1e-4


def test_grad_none_params_untouched_and_weight_decay_only_where_set():
    w, frozen = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(2))
    opt = PaperSGD(
        [{"params": [w], "weight_decay": 0.0}, {"params": [frozen]}], lr=0.1, momentum=MU
    )
    w.grad = torch.ones(3)
    opt.step()
    assert torch.equal(frozen.detach(), torch.ones(2)) and frozen not in opt.state
    assert torch.allclose(w.detach(), torch.full((3,), 0.9))
    assert opt.param_groups[1]["weight_decay"] == WD and opt.defaults["momentum"] == MU


def test_state_dict_round_trip_continues_identically():
    a = _params()
    opt = PaperSGD(a)
    _run(opt, a, LRS[:3])
    b = [nn.Parameter(p.detach().clone()) for p in a]
    opt_b = PaperSGD(b)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    opt_b.load_state_dict(torch.load(buffer, weights_only=True))  # checkpoints are data only
    _run(opt, a, LRS[3:])
    _run(opt_b, b, LRS[3:])
    for p, q in zip(a, b, strict=True):
        assert torch.equal(p, q)


def test_defaults_are_the_papers():
    opt = PaperSGD(_params())
    assert opt.defaults == {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005}


@pytest.fixture(scope="module")
def model() -> SplitAlexNet:
    return SplitAlexNet.emulated()


def test_paper_preset_is_one_group(model):
    (group,) = param_groups(model, "paper", lr=0.01, weight_decay=WD)
    assert group["name"] == "all" and group["lr"] == 0.01 and group["lr_scale"] == 1.0
    assert group["weight_decay"] == WD
    assert len(group["params"]) == len(list(model.parameters())) == 32


def test_code2012_preset_groups(model):
    groups = param_groups(model, "code2012", lr=0.01, weight_decay=WD)
    by_id = {id(p): n for n, p in model.named_parameters()}
    names = {g["name"]: sorted(by_id[id(p)] for p in g["params"]) for g in groups}
    layers = ("conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
    assert [g["name"] for g in groups] == ["weights", "biases", "conv1.weight", "conv1.bias"]
    assert names["weights"] == sorted(f"halves.{h}.{x}.weight" for h in "01" for x in layers)
    assert names["biases"] == sorted(f"halves.{h}.{x}.bias" for h in "01" for x in layers)
    assert names["conv1.weight"] == ["halves.0.conv1.weight", "halves.1.conv1.weight"]
    assert names["conv1.bias"] == ["halves.0.conv1.bias", "halves.1.conv1.bias"]
    settings = {g["name"]: (g["lr"], g["lr_scale"], g["weight_decay"]) for g in groups}
    assert settings == {
        "weights": (0.01, 1.0, WD),
        "biases": (0.02, 2.0, 0.0),
        "conv1.weight": (0.01, 1.0, WD),
        "conv1.bias": (0.02, 2.0, 0.0),
    }
    PaperSGD(groups)  # accepted as they are


def test_unknown_preset_is_an_error(model):
    with pytest.raises(ValueError, match="unknown optimiser preset 'adam'"):
        param_groups(model, "adam", lr=0.01, weight_decay=WD)  # type: ignore[arg-type]


def test_velocities_by_name_move_between_layouts():
    lin = nn.Sequential(nn.Linear(2, 2))
    opt = PaperSGD(lin.parameters())
    for p in lin.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    saved = velocities(opt, lin)
    assert sorted(saved) == ["0.bias", "0.weight"]
    other = copy.deepcopy(lin)
    opt2 = PaperSGD(other.parameters())
    load_velocities(opt2, other, {**saved, "1.weight": torch.zeros(1)})
    for p, q in zip(lin.parameters(), other.parameters(), strict=True):
        assert torch.equal(opt.state[p]["momentum_buffer"], opt2.state[q]["momentum_buffer"])
