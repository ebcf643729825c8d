"""ReLU + LRN + max-pool as one C++ kernel (model/lrn_pool.py, compiled/lrn_pool.cpp): the
values and gradients of the stages run apart, in every layout, with the pool's ties broken
alike, keeping only the convolution's output and a byte per pooled value."""

from __future__ import annotations

import time
import warnings

import pytest
import torch
import torch.nn.functional as F

from split_alexnet.compiled import native
from split_alexnet.model import lrn_pool as fused
from split_alexnet.model.lrn import LocalResponseNorm
from split_alexnet.model.table import LRN_K
from tests.operator_calls import OperatorCalls

ALPHA = 1e-4 / 5  # the network as trained: the printed alpha over the window's size
TOLERANCE = {
    torch.float64: {"rtol": 1e-12, "atol": 1e-14},
    torch.float32: {"rtol": 1e-5, "atol": 1e-6},
}


@pytest.fixture(autouse=True)
def fusion():
    """The kernel on (built once per machine) for every test here; the switch restored after."""
    assert native.load("lrn_pool"), "the C++ kernel did not build"
    before = fused._enabled
    fused.fuse_lrn_pool(True)
    yield
    fused.fuse_lrn_pool(before)


def conv_output(n, channels, side, dtype, layout, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    # A convolution's output: signed, so that the folded ReLU has work to do.
    y = torch.randn(n, channels, side, side, generator=generator, dtype=dtype) * 30
    return y.contiguous(memory_format=layout).requires_grad_()


def upstream(shape, dtype, layout) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(shape, generator=generator, dtype=dtype).contiguous(memory_format=layout)


def apart(y, groups, rectify, pool):
    """torch's own LRN (alpha scaled by size), per group, after torch's ReLU, then max-pool."""
    a = F.relu(y) if rectify else y
    normalised = torch.cat(
        [F.local_response_norm(part, 5, ALPHA * 5, 0.75, LRN_K) for part in a.chunk(groups, 1)], 1
    )
    return F.max_pool2d(normalised, *pool)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
@pytest.mark.parametrize(
    ("channels", "side", "groups", "pool"),
    [(48, 55, 1, (3, 2)), (96, 27, 2, (3, 2)), (20, 12, 1, (2, 2))],
    ids=["conv1-half", "conv2-both-halves", "non-overlapping"],
)
@pytest.mark.parametrize("rectify", [True, False], ids=["relu-folded", "plain"])
def test_equals_relu_lrn_and_max_pool_apart(dtype, layout, channels, side, groups, pool, rectify):
    y = conv_output(2, channels, side, dtype, layout)
    norm = LocalResponseNorm(5, ALPHA, 0.75, LRN_K, groups=groups, rectify=rectify)
    with OperatorCalls() as calls:
        got = fused.lrn_pool(y, norm, pool)
    assert "split_alexnet.lrn_pool" in calls.names
    y_apart = y.detach().clone().requires_grad_()
    expected = apart(y_apart, groups, rectify, pool)
    torch.testing.assert_close(got, expected, **TOLERANCE[dtype])
    assert got.stride() == expected.stride()  # the layout it was given
    g = upstream(got.shape, dtype, layout)
    (grad,) = torch.autograd.grad(got, y, g)
    (expected_grad,) = torch.autograd.grad(expected, y_apart, g)
    torch.testing.assert_close(grad, expected_grad, **TOLERANCE[dtype])
    assert grad.stride() == y.stride()


def test_ties_go_to_the_first_maximum_as_in_max_pool2d() -> None:
    # Equal values everywhere: every window's maximum is tied nine ways, and the gradient
    # must reach the window's top-left pixel, as torch's max_pool2d sends it.
    y = torch.full((1, 8, 7, 7), 3.0, dtype=torch.float64).requires_grad_()
    norm = LocalResponseNorm(5, ALPHA, 0.75, LRN_K, rectify=True)
    (grad,) = torch.autograd.grad(fused.lrn_pool(y, norm, (3, 2)).sum(), y)
    y_apart = y.detach().clone().requires_grad_()
    (expected,) = torch.autograd.grad(apart(y_apart, 1, True, (3, 2)).sum(), y_apart)
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=0)
    assert (grad[0, 0] != 0).sum() == 9  # the 3×3 windows' top-left pixels at stride 2


def test_keeps_the_convolution_output_and_a_byte_per_pooled_value() -> None:
    y = conv_output(4, 48, 55, torch.float32, torch.channels_last)
    norm = LocalResponseNorm(5, ALPHA, 0.75, LRN_K, rectify=True)
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        pooled = fused.lrn_pool(y, norm, (3, 2))
    assert [t.data_ptr() for t in saved][:1] == [y.data_ptr()]
    assert sum(t.untyped_storage().nbytes() for t in saved) == y.numel() * 4 + pooled.numel()


@pytest.mark.parametrize(
    ("norm", "dtype"),
    [
        (LocalResponseNorm(3, ALPHA, 0.75, LRN_K), torch.float32),  # not the paper's window
        (LocalResponseNorm(5, ALPHA, 0.5, LRN_K), torch.float32),  # nor its beta
        (LocalResponseNorm(5, ALPHA, 0.75, LRN_K), torch.float16),
    ],
    ids=["size-3", "beta-0.5", "float16"],
)
def test_other_windows_and_dtypes_run_apart(norm, dtype) -> None:
    y = conv_output(1, 16, 9, torch.float32, torch.contiguous_format).detach().to(dtype)
    with OperatorCalls() as calls:
        got = fused.lrn_pool(y, norm, (3, 2))
    assert "split_alexnet.lrn_pool" not in calls.names
    assert torch.equal(got, F.max_pool2d(norm(y), 3, 2))


def test_switched_off_runs_apart() -> None:
    fused.fuse_lrn_pool(False)
    y = conv_output(1, 16, 9, torch.float64, torch.channels_last).detach()
    norm = LocalResponseNorm(5, ALPHA, 0.75, LRN_K, rectify=True)
    with OperatorCalls() as calls:
        got = fused.lrn_pool(y, norm, (3, 2))
    assert "split_alexnet.lrn_pool" not in calls.names
    assert torch.equal(got, F.max_pool2d(norm(y), 3, 2))


@pytest.mark.skipif(
    not torch.backends.openmp.is_available(), reason="ATen parallelises without OpenMP here"
)
def test_forward_and_backward_split_the_images_among_threads() -> None:
    """at::parallel_for is inline: built without OpenMP, the kernel ran on one thread."""
    y = conv_output(16, 48, 55, torch.float32, torch.channels_last).detach()
    lrn_and_pool = (1, 5, ALPHA, 0.75, LRN_K, 3, 2, True)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        pooled, where = torch.ops.split_alexnet.lrn_pool(y, *lrn_and_pool)  # the team started
        own, process = time.thread_time(), time.process_time()
        for _ in range(3):
            torch.ops.split_alexnet.lrn_pool(y, *lrn_and_pool)
            torch.ops.split_alexnet.lrn_pool_backward(pooled, y, where, *lrn_and_pool)
        own, process = time.thread_time() - own, time.process_time() - process
    finally:
        torch.set_num_threads(threads)
    # Half the images each: the other thread's CPU time about this one's on a quiet host
    # (0.028 s against 0.028), none when serial (-0.000002 against 0.042). One loaded CI run
    # measured 0.020 against 0.042, for a reason not pinned down (this thread spinning at
    # OpenMP's barrier while the other waits for a core would do it). A fifth tells the
    # two builds apart.
    assert process - own > 0.2 * own


def test_the_operator_refuses_a_window_it_does_not_compute() -> None:
    y = torch.zeros(1, 8, 5, 5)
    with pytest.raises(RuntimeError, match=r"the paper's window \(size 5, beta 0.75\), got size 3"):
        torch.ops.split_alexnet.lrn_pool(y, 1, 3, ALPHA, 0.75, LRN_K, 3, 2, True)


def test_a_kernel_that_cannot_build_warns_once_and_reports_it() -> None:
    with pytest.warns(UserWarning, match="could not build the C\\+\\+ kernel no_such_kernel"):
        assert native.load("no_such_kernel") is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native.load("no_such_kernel") is False  # cached: no second build, no warning
