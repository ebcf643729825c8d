"""Two gloo processes = emulation = ReferenceAlexNet: logits, gradients, weights after SGD steps.

For the paper's network, the 2012 code's (layers-145.cfg) and its never-talk net (layers-150.cfg).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from split_alexnet import ReferenceAlexNet, SplitAlexNet, Variant
from tests.pair import run_processes
from tests.variants import model_option

SEED = 7
BATCH = 2
SGD_STEPS = 2
VARIANTS = ("paper", "code2012", "never_talk")


def batch(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(BATCH, 3, 224, 224, generator=generator) * 20
    labels = torch.randint(0, 1000, (BATCH,), generator=generator)
    return images.to(dtype), labels


def half_grads(model: nn.Module) -> dict[tuple[str, int], torch.Tensor]:
    """Every gradient keyed by (reference key, half), whatever the layout."""
    if isinstance(model, SplitAlexNet):
        out = {}
        for name, p in model.named_parameters():
            _, half, layer, kind = name.split(".")
            out[(f"{layer}.{kind}", int(half))] = p.grad.clone()
        return out
    halves = model.variant.halves
    return {
        (f"{name}.{kind}", h): chunk.clone()
        for name, block in model.layers.items()
        for kind in ("weight", "bias")
        for h, chunk in enumerate(
            getattr(block, kind).grad.chunk(
                halves, block.layer.split_dim if kind == "weight" else 0
            )
        )
    }


def run_case(model: nn.Module, dtype: torch.dtype, memory_format: torch.memory_format) -> dict:
    """Forward and backward in train and eval mode, then SGD steps; everything a layout yields."""
    model.to(dtype, memory_format=memory_format)
    images, labels = batch(dtype)
    images = images.contiguous(memory_format=memory_format)
    out: dict = {}
    for mode in ("train", "eval"):
        model.train(mode == "train")
        logits = model(images)
        F.cross_entropy(logits, labels).backward()
        out[mode] = {"logits": logits.detach(), "grads": half_grads(model)}
        model.zero_grad(set_to_none=True)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    losses = []
    for _ in range(SGD_STEPS):
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    out["losses"] = losses
    out["weights"] = model.reference_state_dict()
    return out


def pair_worker(
    rank: int, variant: Variant, dtype: torch.dtype, memory_format: torch.memory_format
) -> dict:
    return run_case(SplitAlexNet.distributed(variant=variant, seed=SEED), dtype, memory_format)


def merge_ranks(results: list[dict]) -> dict:
    merged = results[0]
    for mode in ("train", "eval"):
        merged[mode]["grads"].update(results[1][mode]["grads"])
    return merged


CASES = {
    "float32": (torch.float32, torch.contiguous_format),
    "float64": (torch.float64, torch.contiguous_format),
    "float64-channels_last": (torch.float64, torch.channels_last),
}
# After an SGD step the layouts evaluate at weights that differ by rounding; in float32 that
# moves near-ties in ReLUs and max-pool windows, differently on each CPU's kernels (issue 14).
# Weights after training steps are therefore compared in float64, where no tie is that near.
# The 2012 networks differ from the paper's in their layers, not in how the halves are laid
# out: float64 (exact) suffices for them; the paper's net also runs float32 and NHWC.
LAYOUTS = [f"paper-{case}" for case in CASES] + [f"{name}-float64" for name in VARIANTS[1:]]
EXACT = [layout for layout in LAYOUTS if "float64" in layout]


@pytest.fixture(scope="module", params=LAYOUTS)
def layouts(request: pytest.FixtureRequest) -> dict[str, dict]:
    name, case = request.param.split("-", 1)
    variant = model_option(name)
    dtype, memory_format = CASES[case]
    pair = run_processes(pair_worker, variant, dtype, memory_format)
    # Every rank returns the full logits and the whole reference dict.
    for mode in ("train", "eval"):
        torch.testing.assert_close(pair[0][mode]["logits"], pair[1][mode]["logits"], rtol=0, atol=0)
    for key, value in pair[0]["weights"].items():
        torch.testing.assert_close(value, pair[1]["weights"][key], rtol=0, atol=0)
    return {
        "dtype": dtype,
        "pair": merge_ranks(pair),
        "variant": variant,
        "emulated": run_case(SplitAlexNet.emulated(variant, seed=SEED), dtype, memory_format),
        "reference": run_case(ReferenceAlexNet(variant, seed=SEED), dtype, memory_format),
    }


def exchange_worker(rank: int) -> dict:
    """Each rank gathers its channels_last maps and sends a gradient back through the gather."""
    from split_alexnet.parallel.collectives import ProcessGroupExchange

    exchange = ProcessGroupExchange()
    maps = _rank_maps(rank).requires_grad_()
    gathered = exchange.gather([maps], dim=1)
    gathered.backward(_upstream(rank))
    out = {"gathered": gathered.detach(), "grad": maps.grad, "bytes": exchange.bytes_received}
    partial = _rank_maps(rank).flatten(1).requires_grad_()
    summed = exchange.sum_logits([partial])
    summed.backward(_upstream(0).flatten(1)[:, : summed.shape[1]])
    return {**out, "summed": summed.detach(), "summed_grad": partial.grad}


def _rank_maps(rank: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(rank)
    maps = torch.randn(2, 3, 4, 5, generator=generator)
    return maps.contiguous(memory_format=torch.channels_last)


def _upstream(rank: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(10 + rank)
    return torch.randn(2, 6, 4, 5, generator=generator).contiguous(
        memory_format=torch.channels_last
    )


def test_the_exchange_keeps_channels_last_and_matches_concatenation() -> None:
    ranks = run_processes(exchange_worker)
    whole = torch.cat([_rank_maps(0), _rank_maps(1)], 1)
    summed = _upstream(0) + _upstream(1)
    for rank, got in enumerate(ranks):
        assert torch.equal(got["gathered"], whole)
        assert got["gathered"].is_contiguous(memory_format=torch.channels_last)
        # The backward is a reduce-scatter: both ranks' gradients summed, this rank's channels.
        assert torch.equal(got["grad"], summed[:, 3 * rank : 3 * rank + 3])
        assert got["grad"].is_contiguous(memory_format=torch.channels_last)
        assert got["bytes"] == 2 * (2 * 3 * 4 * 5 * 4)
        # Partial logits: summed forward; backward, each rank's own gradient of the same loss.
        assert torch.equal(got["summed"], (_rank_maps(0) + _rank_maps(1)).flatten(1))
        assert torch.equal(got["summed_grad"], _upstream(0).flatten(1)[:, :60])


def assert_near(
    actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str
) -> None:
    # float64 agrees to ~1e-9 relative: a wrong backward cannot hide in rounding noise there.
    rtol = 1e-9 if dtype == torch.float64 else 2e-4
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * scale, msg=what)


@pytest.mark.parametrize("other", ["pair", "emulated"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_logits_and_every_gradient_match_the_reference(
    layouts: dict, other: str, mode: str
) -> None:
    dtype, reference, candidate = layouts["dtype"], layouts["reference"], layouts[other]
    assert candidate[mode]["logits"].shape == (BATCH, 1000)
    assert_near(candidate[mode]["logits"], reference[mode]["logits"], dtype, f"{other} logits")
    assert candidate[mode]["grads"].keys() == reference[mode]["grads"].keys()
    assert len(reference[mode]["grads"]) == 2 * 16
    for key, expected in reference[mode]["grads"].items():
        assert expected.abs().max() > 0, f"{key}: zero gradient tests nothing"
        assert_near(candidate[mode]["grads"][key], expected, dtype, f"{other} grad {key}")


def test_train_and_eval_differ(layouts: dict) -> None:
    """Dropout is live in train mode and replaced by the 0.5 scaling in eval."""
    reference = layouts["reference"]
    assert not torch.allclose(reference["train"]["logits"], reference["eval"]["logits"])


@pytest.mark.parametrize("layouts", EXACT, indirect=True)
@pytest.mark.parametrize("other", ["pair", "emulated"])
def test_sgd_steps_reach_the_same_weights(layouts: dict, other: str) -> None:
    reference, candidate = layouts["reference"], layouts[other]
    assert layouts["dtype"] == torch.float64
    start = ReferenceAlexNet(layouts["variant"], seed=SEED).reference_state_dict()
    for key, expected in reference["weights"].items():
        assert not torch.equal(expected.float(), start[key]), f"{key} did not move"
        assert_near(candidate["weights"][key], expected, torch.float64, f"{other} weight {key}")
    torch.testing.assert_close(
        torch.tensor(candidate["losses"]), torch.tensor(reference["losses"]), rtol=1e-12, atol=0
    )


def bytes_worker(rank: int) -> dict[str, dict[str, int]]:
    """Bytes this rank receives over one forward and backward, in float32 and under bf16."""
    images, labels = batch(torch.float32)
    out: dict[str, dict[str, int]] = {}
    for variant in VARIANTS:
        model = SplitAlexNet.distributed(variant=model_option(variant), seed=SEED)
        for name, enabled in (("fp32", False), ("bf16", True)):
            before = model.exchange.bytes_received
            with torch.autocast("cpu", torch.bfloat16, enabled=enabled):
                logits = model(images)
            F.cross_entropy(logits.float(), labels).backward()
            out.setdefault(variant, {})[name] = model.exchange.bytes_received - before
    return out


# Per image, from the peer: forward and backward through each all-gather of maps (pool2
# 13·13·128, pool5 6·6·128, fc6 2048, fc7 2048), forward only for the logits, whose gradient
# stays local: 500 gathered, or 1000 partial logits summed (fc1000, layers-145.cfg).
PER_IMAGE = {
    "paper": 2 * (13 * 13 * 128 + 6 * 6 * 128 + 2048 + 2048) + 500,
    "code2012": 2 * (13 * 13 * 128 + 6 * 6 * 128 + 2048) + 1000,
    "never_talk": 1000,  # layers-150.cfg: the halves meet at fc1000 only
}


def test_under_bf16_autocast_every_exchange_carries_half_the_bytes() -> None:
    """The maps in front of conv3 come out of LRN in float32; they travel as bf16 too."""
    for got in run_processes(bytes_worker):
        for variant, per_image in PER_IMAGE.items():
            assert got[variant]["fp32"] == 4 * BATCH * per_image, variant
            assert got[variant]["bf16"] == 2 * BATCH * per_image, variant
