"""The compiled LRN kernels are traced once per layer shape, not once per batch size.

A recompile costs seconds of tracing at every new batch size (the last,
smaller batch of an epoch, validation, a sweep), and after
torch._dynamo.config.recompile_limit of them the kernels fall back to eager
without a word. Counted with dynamo's own counters.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from split_alexnet.data import views
from split_alexnet.model import lrn
from split_alexnet.model.lrn import local_response_norm

pytest.importorskip("torch._inductor")

K, BETA, ALPHA = 2.0, 0.75, 2e-5
BATCHES = (2, 3, 5, 8)


def pre_activations(n: int, channels: int = 8, side: int = 5) -> torch.Tensor:
    generator = torch.Generator().manual_seed(n)
    return torch.randn(n, channels, side, side, generator=generator) * 40


def step(x: torch.Tensor, upstream: torch.Tensor, groups: int) -> tuple[torch.Tensor, ...]:
    x = x.detach().requires_grad_()
    out = local_response_norm(x, 5, ALPHA, BETA, K, groups=groups, rectify=True)
    (grad,) = torch.autograd.grad(out, x, upstream)
    return out, grad


@pytest.fixture
def fresh_compiler(monkeypatch: pytest.MonkeyPatch):
    torch._dynamo.reset()
    counters.clear()
    monkeypatch.setattr(lrn.KERNELS, "compiled", {})
    lrn.compile_lrn(True)
    yield
    lrn.compile_lrn(False)
    torch._dynamo.reset()


def graphs() -> int:
    return counters["stats"]["unique_graphs"]


@pytest.mark.parametrize("groups", [1, 2])
def test_one_graph_per_kernel_at_every_batch_size(fresh_compiler, groups: int) -> None:
    """Forward and backward compile once each; later batch sizes reuse them."""
    seen = []
    for n in BATCHES:
        x = pre_activations(n)
        upstream = torch.randn_like(x)
        compiled = step(x, upstream, groups)
        seen.append(graphs())
        lrn.compile_lrn(False)
        eager = step(x, upstream, groups)
        lrn.compile_lrn(True)
        # The fused kernels round differently from the eager ones (tests/test_lrn.py):
        # the same tolerance here; exactness is across batch sizes, below.
        torch.testing.assert_close(compiled[0], eager[0], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(compiled[1], eager[1], rtol=1e-5, atol=1e-7)
    assert lrn.KERNELS.compiled["forward"] is not False, "the compiled kernel fell back to eager"
    assert seen == [2] * len(BATCHES), f"graphs compiled after each batch size: {seen}"


def test_each_image_comes_out_the_same_at_every_batch_size(fresh_compiler) -> None:
    """The kernel that serves many batch sizes computes every image bit for bit alike."""
    x = pre_activations(max(BATCHES))
    upstream = torch.randn_like(x)
    whole = step(x, upstream, groups=1)
    for n in BATCHES:
        part = step(x[:n], upstream[:n], groups=1)
        for got, expected in zip(part, whole, strict=True):
            assert torch.equal(got, expected[:n]), f"batch {n} differs from its rows at {len(x)}"


def _halved(fn):
    """A 'compiled' kernel that zeroes half of each output, as Inductor's did under
    ATEN_CPU_CAPABILITY=avx2 on an AVX-512 CPU (compiled/kernels.py)."""

    def halved(out: torch.Tensor) -> torch.Tensor:
        out = out.clone()  # not in place: LRN's forward hands back its input
        out.view(-1)[::2] = 0
        return out

    def wrong(*args):
        result = fn(*args)
        return tuple(map(halved, result)) if isinstance(result, tuple) else halved(result)

    return wrong


def test_a_compiled_lrn_that_computes_wrong_numbers_warns_and_runs_eager(monkeypatch) -> None:
    monkeypatch.setattr(lrn.KERNELS, "compiled", {})
    monkeypatch.setattr(lrn.KERNELS, "enabled", True)
    monkeypatch.setattr(torch, "compile", lambda fn, **options: _halved(fn))
    x = pre_activations(2)
    upstream = torch.randn_like(x)
    with pytest.warns(UserWarning, match="compiled LRN disagrees with the eager kernel"):
        got = step(x, upstream, groups=1)
    assert lrn.KERNELS.compiled == {"forward": False, "backward": False}
    monkeypatch.setattr(lrn.KERNELS, "enabled", False)
    for value, expected in zip(got, step(x, upstream, groups=1), strict=True):
        assert torch.equal(value, expected)


def test_a_compiled_finish_that_computes_wrong_numbers_warns_and_runs_eager(monkeypatch) -> None:
    monkeypatch.setattr(views.KERNELS, "compiled", {})
    monkeypatch.setattr(views.KERNELS, "enabled", True)
    monkeypatch.setattr(torch, "compile", lambda fn, **options: _halved(fn))
    cuts = torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8)
    mean, shift = torch.full((3, 224, 224), 100.0), torch.randn(2, 3)
    with pytest.warns(UserWarning, match="compiled finish disagrees with the eager kernel"):
        got = views.finish(cuts, mean, shift, "code")
    assert views.KERNELS.compiled == {"finish": False}
    monkeypatch.setattr(views.KERNELS, "enabled", False)
    assert torch.equal(got, views.finish(cuts, mean, shift, "code"))
