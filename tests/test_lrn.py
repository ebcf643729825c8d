"""LRN (Sec. 3.3) and the 2012 code's same-map rnorm: outputs and gradients equal their formulas
term by term, and torch's module, in every layout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from split_alexnet.model import lrn
from split_alexnet.model.lrn import LocalResponseNorm, local_response_norm
from split_alexnet.model.rnorm import same_map_response_norm

K, BETA = 2.0, 0.75


def formula(a: torch.Tensor, size: int, alpha: float, beta: float = BETA) -> torch.Tensor:
    """The formula term by term; the window runs from c - size//2 to c + (size-1)//2."""
    channels = a.shape[1]
    out = torch.empty_like(a)
    for c in range(channels):
        lo, hi = max(0, c - size // 2), min(channels - 1, c + (size - 1) // 2)
        out[:, c] = a[:, c] / (K + alpha * (a[:, lo : hi + 1] ** 2).sum(1)) ** beta
    return out


def activations(*shape: int, dtype=torch.float64, scale: float = 40.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(sum(shape))
    # ReLU outputs: non-negative, with exact zeros where the backward must not divide.
    a = (torch.randn(shape, generator=generator, dtype=dtype) * scale).clamp_min(0)
    return a.requires_grad_()


def upstream_like(t: torch.Tensor) -> torch.Tensor:
    """A gradient from above, the same for every run: torch's global generator is in
    whatever state earlier tests on the same worker left it, and these tolerances are
    close to float64's rounding where a gradient element cancels."""
    generator = torch.Generator().manual_seed(t.numel())
    return torch.empty_like(t).copy_(torch.randn(t.shape, generator=generator, dtype=t.dtype))


@pytest.mark.parametrize("size", [1, 3, 5, 7, 4])
@pytest.mark.parametrize("convention", ["trained", "literal"])
def test_output_and_gradient_equal_the_formula_term_by_term(size: int, convention: str) -> None:
    alpha = 1e-4 / size if convention == "trained" else 1e-4
    a = activations(2, 9, 4, 3)
    got = local_response_norm(a, size, alpha, BETA, K)
    expected = formula(a, size, alpha)
    torch.testing.assert_close(got, expected, rtol=1e-13, atol=0)
    upstream = upstream_like(got)
    (grad,) = torch.autograd.grad(got, a, upstream)
    (expected_grad,) = torch.autograd.grad(expected, a, upstream)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", [5, 3, 2])
def test_equals_torch_local_response_norm_with_alpha_times_size(dtype, size: int) -> None:
    a = activations(3, 48, 6, 5, dtype=dtype)
    b = a.detach().clone().requires_grad_()
    alpha = 1e-4 / 5
    got = local_response_norm(a, size, alpha, BETA, K)
    expected = torch.nn.LocalResponseNorm(size, alpha * size, BETA, K)(b)
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 0}
    torch.testing.assert_close(got, expected, **tol)
    upstream = upstream_like(got)
    got.backward(upstream)
    expected.backward(upstream)
    torch.testing.assert_close(a.grad, b.grad, **tol)


@pytest.mark.parametrize("size,beta", [(5, 0.75), (3, 0.6), (4, 0.75)])
def test_gradcheck_float64(size: int, beta: float) -> None:
    # Large alpha so the normalisation term matters as much as the identity.
    a = activations(2, 7, 3, 2, scale=3.0)
    assert torch.autograd.gradcheck(
        lambda x: local_response_norm(x, size, 0.3, beta, K), (a,), eps=1e-6, atol=1e-8
    )


def test_edge_channels_see_only_the_channels_that_exist() -> None:
    a = torch.zeros(1, 6, 1, 1, dtype=torch.float64)
    a[0, :, 0, 0] = torch.arange(1.0, 7.0)
    alpha = 0.01
    got = local_response_norm(a, 5, alpha, BETA, K)[0, :, 0, 0]
    assert got[0].item() == pytest.approx(1 / (K + alpha * (1 + 4 + 9)) ** BETA, rel=1e-15)
    assert got[1].item() == pytest.approx(2 / (K + alpha * (1 + 4 + 9 + 16)) ** BETA, rel=1e-15)
    assert got[5].item() == pytest.approx(6 / (K + alpha * (16 + 25 + 36)) ** BETA, rel=1e-15)
    # Fewer channels than the window: every channel sees all of them.
    two = local_response_norm(a[:, :2], 5, alpha, BETA, K)[0, :, 0, 0]
    torch.testing.assert_close(two, a[0, :2, 0, 0] / (K + alpha * 5) ** BETA)


def test_groups_normalise_each_half_alone_in_any_layout() -> None:
    a = activations(2, 96, 5, 5)
    expected = torch.cat([formula(part, 5, 2e-5) for part in a.split(48, 1)], 1)
    upstream = upstream_like(expected)
    (expected_grad,) = torch.autograd.grad(expected, a, upstream)
    for layout in (torch.contiguous_format, torch.channels_last):
        x = a.detach().contiguous(memory_format=layout).requires_grad_()
        got = LocalResponseNorm(5, 2e-5, BETA, K, groups=2)(x)
        assert got.is_contiguous(memory_format=layout)
        torch.testing.assert_close(got, expected, rtol=1e-13, atol=0)
        got.backward(upstream.contiguous(memory_format=layout))
        torch.testing.assert_close(x.grad, expected_grad, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="96 channels do not split into 5 groups"):
        local_response_norm(a, 5, 2e-5, BETA, K, groups=5)


def pre_activations(*shape: int) -> torch.Tensor:
    """Conv outputs: both signs, and exact zeros where ReLU's gradient is zero."""
    generator = torch.Generator().manual_seed(sum(shape))
    y = torch.randn(shape, generator=generator, dtype=torch.float64) * 40
    y[y.abs() < 5] = 0
    return y.requires_grad_()


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_rectify_is_relu_then_lrn_value_and_gradient(layout) -> None:
    y = pre_activations(2, 96, 5, 4)
    a = y.detach().clamp_min(0)
    expected = torch.cat([formula(part, 5, 2e-5) for part in a.split(48, 1)], 1)
    x = y.detach().contiguous(memory_format=layout).requires_grad_()
    got = LocalResponseNorm(5, 2e-5, BETA, K, groups=2, rectify=True)(x)
    torch.testing.assert_close(got, expected, rtol=1e-13, atol=0)
    upstream = upstream_like(got)
    (grad,) = torch.autograd.grad(got, x, upstream)
    composed = local_response_norm(F.relu(y), 5, 2e-5, BETA, K, groups=2)
    (expected_grad,) = torch.autograd.grad(composed, y, upstream)
    assert (expected_grad[y <= 0] == 0).all() and (grad[y <= 0] == 0).all()
    torch.testing.assert_close(grad, expected_grad, rtol=1e-13, atol=0)


@pytest.mark.parametrize("rectify", [False, True])
def test_the_compiled_kernels_equal_the_eager_ones(
    monkeypatch: pytest.MonkeyPatch, rectify: bool
) -> None:
    """torch.compile fuses the same arithmetic; a compiler failure falls back to eager."""
    pytest.importorskip("torch._inductor")
    monkeypatch.setattr(lrn.KERNELS, "compiled", {})
    a = (pre_activations if rectify else activations)(2, 48, 7, 7).float().detach()
    a.requires_grad_()
    upstream = upstream_like(a)
    eager = local_response_norm(a, 5, 2e-5, BETA, K, rectify=rectify)
    (eager_grad,) = torch.autograd.grad(eager, a, upstream)
    lrn.compile_lrn(True)
    try:
        compiled = local_response_norm(a, 5, 2e-5, BETA, K, rectify=rectify)
        (compiled_grad,) = torch.autograd.grad(compiled, a, upstream)
    finally:
        lrn.compile_lrn(False)
    torch.testing.assert_close(compiled, eager, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(compiled_grad, eager_grad, rtol=1e-5, atol=1e-7)
    assert lrn.KERNELS.compiled["forward"] is not False, "the compiled kernel fell back to eager"


def test_a_failing_compiler_warns_and_stays_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(lrn.KERNELS, "compiled", {"forward": broken, "backward": broken})
    monkeypatch.setattr(lrn.KERNELS, "enabled", True)
    a = activations(1, 6, 2, 2)
    with pytest.warns(UserWarning, match="compiled LRN failed"):
        got = local_response_norm(a, 5, 2e-5, BETA, K)
    torch.testing.assert_close(got, formula(a, 5, 2e-5), rtol=1e-13, atol=0)
    assert lrn.KERNELS.compiled["forward"] is False


def test_module_and_errors() -> None:
    module = LocalResponseNorm(5, 2e-5, BETA, K, groups=2)
    assert "groups=2" in repr(module) and "alpha=2e-05" in repr(module)
    with pytest.raises(ValueError, match=r"\(N, C, ...\)"):
        local_response_norm(torch.ones(3), 5, 2e-5, BETA, K)
    # torch's functional form, for the record: it divides its alpha by size.
    x = activations(1, 8, 2, 2)
    torch.testing.assert_close(
        local_response_norm(x, 5, 1e-4 / 5, BETA, K), F.local_response_norm(x, 5, 1e-4, BETA, K)
    )


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu() -> None:
    a = activations(2, 48, 5, 5, dtype=torch.float32)
    upstream = upstream_like(a)
    cpu = local_response_norm(a, 5, 2e-5, BETA, K)
    (cpu_grad,) = torch.autograd.grad(cpu, a, upstream)
    b = a.detach().cuda().requires_grad_()
    gpu = local_response_norm(b, 5, 2e-5, BETA, K)
    (gpu_grad,) = torch.autograd.grad(gpu, b, upstream.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gpu_grad.cpu(), cpu_grad, rtol=1e-5, atol=1e-6)


def rnorm_formula(a: torch.Tensor, size: int, scale: float, power: float) -> torch.Tensor:
    """The 2012 code's rnorm pixel by pixel: the squares of the map's own values in the window
    from size//2 before the pixel, cut at the map's edges; scale / size² (layer.py) and 1 + …
    (conv_util.cu) whatever the cut."""
    height, width = a.shape[2:]
    out = torch.empty_like(a)
    for y in range(height):
        for x in range(width):
            top, left = y - size // 2, x - size // 2
            window = a[:, :, max(0, top) : top + size, max(0, left) : left + size]
            d = 1 + scale / size**2 * (window**2).sum((2, 3))
            out[:, :, y, x] = a[:, :, y, x] * d**-power
    return out


@pytest.mark.parametrize("size", [5, 3, 4, 1])
def test_rnorm_output_and_gradient_equal_the_code_term_by_term(size: int) -> None:
    a = activations(2, 4, 6, 7)
    got = same_map_response_norm(a, size, 1e-3, 0.75)
    expected = rnorm_formula(a, size, 1e-3, 0.75)
    torch.testing.assert_close(got, expected, rtol=1e-13, atol=0)
    upstream = upstream_like(got)
    (grad,) = torch.autograd.grad(got, a, upstream)
    (expected_grad,) = torch.autograd.grad(expected, a, upstream)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-15)


def test_rnorm_divides_by_the_whole_window_at_the_edges_and_keeps_maps_apart() -> None:
    """cnorm2a (size 5, scale 1e-3, pow 0.75) on maps of ones: a corner's window holds 3 × 3
    pixels, the centre's 5 × 5; the sum is scaled by 1e-3 / 25 at both."""
    ones = torch.ones(1, 2, 5, 5, dtype=torch.float64)
    ones[0, 1] = 0  # the other map's values must not reach this one's windows
    out = same_map_response_norm(ones, 5, 1e-3, 0.75)
    corner, centre, edge = ((1 + 1e-3 / 25 * n) ** -0.75 for n in (9, 25, 15))
    expected = torch.tensor([corner, centre, edge], dtype=torch.float64)
    got = torch.stack([out[0, 0, 0, 0], out[0, 0, 2, 2], out[0, 0, 0, 2]])
    torch.testing.assert_close(got, expected, rtol=1e-15, atol=0)
    assert torch.equal(out[0, 1], ones[0, 1])
