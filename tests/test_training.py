"""The training and evaluation commands as users run them: real processes, files and signals."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from subprocess import Popen

import pytest
import torch

from split_alexnet.training.checkpoint import (
    half_file,
    latest,
    load_run,
    reference_state,
    save_run,
)
from split_alexnet.training.files import atomic_save, load_checkpoint
from split_alexnet.training.metrics import read_metrics

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
STEPS_PER_EPOCH = 3  # 24 training images, batch 8


def options(root: Path, run_dir: Path, *extra: str) -> list[str]:
    """A short run on the tiny set; one checkpoint kept unless `extra` says more.

    The network reads 112 pixels (data/scaled.py) unless `extra` sets model.image_size:
    what these tests check (restarts, signals, layouts, files) does not depend on the
    input's size, and the scaled net's step and checkpoint (0.18 GB, not 0.46) are
    a third of the paper's, which lets the suite run two modules at once in 2 GB.
    """
    defaults = {"keep_checkpoints": "1", "model.image_size": "112"}
    for option in extra:
        defaults.pop(option.split("=", 1)[0], None)
    return [
        "data=folder", f"data.root={root}", "data.batch_size=8", "epochs=2", "threads=1",
        "data.checksum_every=1", f"run_dir={run_dir}",
        *(f"{key}={value}" for key, value in defaults.items()), *extra,
    ]  # fmt: skip


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}


def train(
    root: Path, run_dir: Path, *extra: str, pair: bool = False, check: bool = True
) -> subprocess.CompletedProcess:
    launcher = [*TORCHRUN, "-m"] if pair else [sys.executable, "-m"]
    mode = "mode=distributed" if pair else "mode=emulate"
    command = [*launcher, "split_alexnet.train", mode, *options(root, run_dir, *extra)]
    result = subprocess.run(command, capture_output=True, text=True, env=environment())
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def losses(run_dir: Path) -> dict[int, float]:
    """The training loss of every step (a step logged twice, after a restart, must agree)."""
    seen: dict[int, float] = {}
    for record in read_metrics(run_dir / "metrics.jsonl"):
        if record["kind"] == "train":
            assert seen.setdefault(record["step"], record["loss"]) == record["loss"], record
    return seen


def assert_same_curve(run_dir: Path, expected_run: Path) -> None:
    """Every step's loss, to float32 rounding across process layouts and memory formats."""
    got, expected = losses(run_dir), losses(expected_run)
    assert got.keys() == expected.keys()
    for step, loss in expected.items():
        assert got[step] == pytest.approx(loss, rel=1e-4), step


@pytest.fixture(scope="module")
def uninterrupted(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    """Two epochs in emulation without a stop: the curve the others must reproduce.

    Its checkpoints go with the module, so that they and a later module's never
    share the disk (the suite stays under 2 GB).
    """
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    train(tiny_dataset, run_dir, "keep_checkpoints=2")
    yield run_dir
    shutil.rmtree(run_dir / "checkpoints")


def test_a_run_leaves_checkpoints_metrics_curves_filters(uninterrupted: Path) -> None:
    records = read_metrics(uninterrupted / "metrics.jsonl")
    train_steps = [r["step"] for r in records if r["kind"] == "train"]
    assert train_steps == list(range(1, 2 * STEPS_PER_EPOCH + 1))
    val = [r for r in records if r["kind"] == "val"]
    assert [r["epoch"] for r in val] == [0, 1]
    assert all(r["images"] == 12 for r in val)  # 12 = 8 + 4: the partial batch counted once
    assert all(r["lr"] == 0.01 for r in records if r["kind"] == "train")
    assert (uninterrupted / "curves.png").stat().st_size > 10_000
    assert sorted(p.name for p in (uninterrupted / "filters").iterdir()) == [
        "epoch000.png", "epoch001.png",
    ]  # fmt: skip
    assert any((uninterrupted / "tensorboard").iterdir())
    assert (uninterrupted / "logs" / "rank0.log").read_text().count("validation top-1 error") == 2
    run = load_run(latest(uninterrupted))
    assert (run["epoch"], run["batch"], run["step"]) == (2, 0, 2 * STEPS_PER_EPOCH)
    files = sorted(p.name for p in (uninterrupted / "checkpoints").iterdir())
    assert files == [
        f"{kind}-step{step:08d}.pt"
        for kind in ("half0", "half1", "run")
        for step in (STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH)
    ]


def test_stopped_and_resumed_gives_the_same_loss_curve(
    tiny_dataset: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    train(tiny_dataset, run_dir, "max_steps=4")  # stops mid-epoch 1, with a checkpoint
    assert load_run(latest(run_dir))["batch"] == 1
    # The rest loads through the compiled float passes (compile_data): the same bits.
    train(tiny_dataset, run_dir, "compile_data=true")
    assert losses(run_dir) == losses(uninterrupted)


def test_a_pair_checkpoint_resumes_in_emulation_and_back(
    tiny_dataset: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    """Two gloo processes through the real entry point, then emulation, then the pair again."""
    run_dir = tmp_path / "run"
    train(tiny_dataset, run_dir, "max_steps=2", pair=True)
    train(tiny_dataset, run_dir, "max_steps=4")
    train(tiny_dataset, run_dir, pair=True)
    assert_same_curve(run_dir, uninterrupted)
    assert (run_dir / "logs" / "rank1.log").exists()


def test_an_nchw_pair_trains_the_same_curve_and_resumes_in_channels_last(
    tiny_dataset: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    """NCHW weights, activations and exchanges; its checkpoint continues in the NHWC default."""
    run_dir = tmp_path / "run"
    train(tiny_dataset, run_dir, "max_steps=3", "channels_last=false", pair=True)
    train(tiny_dataset, run_dir)
    assert_same_curve(run_dir, uninterrupted)


def test_sigterm_saves_and_the_run_resumes(
    tiny_dataset: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "split_alexnet.train", "mode=emulate"]
    process = subprocess.Popen(
        [*command, *options(tiny_dataset, run_dir, "epochs=50")],
        env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and len(losses(run_dir)) >= 2):
        assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    assert "stopped by signal" in output
    stopped_at = load_run(latest(run_dir))["step"]
    assert stopped_at == max(losses(run_dir))
    train(tiny_dataset, run_dir)  # epochs=2 again: finishes the same two epochs
    assert losses(run_dir) == losses(uninterrupted)


def test_a_non_finite_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    train(tiny_dataset, run_dir, "max_steps=1")  # ε 1e30 then blows up within epoch 0
    good = latest(run_dir)
    result = train(tiny_dataset, run_dir, "optim.lr=1e30", check=False)
    assert result.returncode == 2
    message = result.stdout + result.stderr
    assert "loss is nan" in message or "loss is inf" in message
    assert f"the last good checkpoint is {good}" in message
    assert "Traceback" not in message
    assert latest(run_dir) == good
    assert load_checkpoint(good, what="run state")["step"] == 1


def start_pair(root: Path, run_dir: Path, restarts: int, *extra: str) -> tuple[Popen, list[int]]:
    """A torchrun pair training on `root`, once it has logged two steps, and its workers."""
    command = [
        *TORCHRUN, f"--max-restarts={restarts}", "--monitor-interval=0.2",
        "-m", "split_alexnet.train", "mode=distributed", *options(root, run_dir, *extra),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while not ((run_dir / "metrics.jsonl").exists() and len(losses(run_dir)) >= 2):
        assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
        time.sleep(0.2)
    workers = subprocess.run(
        ["pgrep", "-f", "-P", str(process.pid), "split_alexnet.train"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert len(workers) == 2
    return process, [int(w) for w in workers]


def test_a_killed_rank_restarts_the_pair_from_the_last_checkpoint(
    tiny_dataset: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    process, workers = start_pair(tiny_dataset, run_dir, 1, "checkpoint_every=1")
    os.kill(workers[1], signal.SIGKILL)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    assert_same_curve(run_dir, uninterrupted)


def test_a_hung_rank_stops_its_peer_at_the_collective_timeout_with_one_line(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    """Issue 12: a rank stuck in a collective used to wait until torchrun's SIGKILL."""
    run_dir = tmp_path / "run"
    process, workers = start_pair(tiny_dataset, run_dir, 0, "epochs=50", "collective_timeout_s=5")
    try:
        os.kill(workers[1], signal.SIGSTOP)
        deadline = time.monotonic() + 120
        while not _exited(workers[0]):
            assert time.monotonic() < deadline, "the peer of a stopped rank did not stop"
            time.sleep(0.2)
        # torchrun would now SIGTERM the stopped rank, which cannot act on it, and
        # SIGKILL it 30 s later: the test has seen what it came for.
    finally:
        # The workers have process groups of their own (bench/chaos.py): each is killed
        # by pid, or the stopped one outlives torchrun, stopped, holding its memory.
        for pid in (*workers, process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait()
    logs = [(run_dir / "logs" / f"rank{rank}.log").read_text() for rank in (0, 1)]
    said = [log for rank, log in enumerate(logs) if f"rank {rank}: a collective gave up" in log]
    assert len(said) == 1, logs  # the rank that was not stopped
    assert "Traceback" not in said[0]
    assert "a collective gave up on the other processes at epoch " in said[0]
    kept = latest(run_dir) or "its start (no checkpoint yet)"
    assert f"started again with the same run_dir, the run continues from {kept}" in said[0]


def _exited(pid: int) -> bool:
    """Whether process `pid` has ended (a zombie until its parent reaps it counts)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_evaluate_and_export_from_a_checkpoint_and_start_from_the_dict(
    tiny_dataset: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval.json"
    subprocess.run(
        [sys.executable, "-m", "split_alexnet.evaluate", f"checkpoint={uninterrupted}",
         "views=ten", f"out={out}"],
        check=True, capture_output=True, env=environment(),
    )  # fmt: skip
    result = json.loads(out.read_text())
    assert result["images"] == 12 and result["views"] == "ten"
    assert result["step"] == 2 * STEPS_PER_EPOCH
    assert result["processes"] == 1
    # The same command under torchrun evaluates as a pair (mode=auto): same counts.
    paired = tmp_path / "eval-pair.json"
    subprocess.run(
        [*TORCHRUN, "-m", "split_alexnet.evaluate", f"checkpoint={uninterrupted}", "views=ten",
         f"out={paired}"],
        check=True, capture_output=True, env=environment(),
    )  # fmt: skip
    pair = json.loads(paired.read_text())
    assert pair["processes"] == 2
    assert {k: pair[k] for k in ("images", "top1_error", "top5_error")} == {
        k: result[k] for k in ("images", "top1_error", "top5_error")
    }
    weights = tmp_path / "weights.pt"
    subprocess.run(
        [sys.executable, "-m", "split_alexnet.export",
         f"checkpoint={uninterrupted}", f"out={weights}"],
        check=True, capture_output=True, env=environment(),
    )  # fmt: skip
    state = torch.load(weights, weights_only=True)
    assert state["conv1.weight"].shape == (96, 3, 11, 11)
    assert state["fc8.weight"].shape == (4, 4096)  # four classes, two per half
    half1 = load_checkpoint(
        uninterrupted / "checkpoints" / f"half1-step{2 * STEPS_PER_EPOCH:08d}.pt", what="half 1"
    )
    torch.testing.assert_close(state["fc6.weight"][2048:], half1["params"]["halves.1.fc6.weight"])
    # A run started from the dict holds exactly those weights (ε 0: one step changes nothing).
    run_dir = tmp_path / "from-dict-run"
    train(tiny_dataset, run_dir, f"init_from={weights}", "optim.lr=0", "max_steps=1")
    for key, value in reference_state(run_dir).items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize(
    "extra,message",
    [
        (["bogus=1"], "Key 'bogus' not in 'TrainConfig'"),
        (["data.root=/no/such/folder"], "data root /no/such/folder does not exist"),
    ],
)
def test_bad_options_and_a_missing_root_are_clear_errors(
    tiny_dataset: Path, tmp_path: Path, extra: list[str], message: str
) -> None:
    result = train(tiny_dataset, tmp_path / "run", *extra, check=False)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def test_an_odd_world_size_is_refused(tiny_dataset: Path, tmp_path: Path) -> None:
    command = [
        *TORCHRUN[:3], "--standalone", "--nproc_per_node=3", "-m", "split_alexnet.train",
        "mode=distributed", *options(tiny_dataset, tmp_path / "run"),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=environment())
    assert result.returncode != 0
    assert "world size 3 is not a multiple of 2" in result.stdout + result.stderr


def test_bf16_autocast_trains_close_to_fp32() -> None:
    from split_alexnet import SplitAlexNet
    from split_alexnet.parallel.layout import Layout
    from split_alexnet.train import step_function

    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0)) * 20
    labels = torch.tensor([1, 7])
    layout = Layout("emulate", torch.device("cpu"))
    losses = {}
    for precision in ("fp32", "bf16"):
        model = SplitAlexNet.emulated(seed=0)
        step = step_function(model, torch.optim.SGD(model.parameters(), lr=0.01), layout, precision)
        losses[precision], _ = step(images, labels)
        assert losses[precision].dtype == torch.float32
    assert losses["bf16"].item() == pytest.approx(losses["fp32"].item(), rel=0.05)
    with pytest.raises(ValueError, match="precision must be fp32, fp64, bf16"):
        step_function(model, torch.optim.SGD(model.parameters()), layout, "fp8")


def _as_a_gpu_wrote_it(source: Path, checkpoints: Path) -> None:
    """The newest checkpoint of `source`, its halves in the form a CUDA run wrote before:
    a 16-byte Philox state (seed, offset) per dropout layer instead of the draw count."""
    run_path = latest(source)
    state = load_run(run_path)
    checkpoints.mkdir(parents=True)
    for h in (0, 1):
        half = load_checkpoint(half_file(run_path.parent, h, state["step"]), what="half")
        names = half.pop("dropout_draws")
        half["dropout_rng"] = {name: torch.zeros(16, dtype=torch.uint8) for name in names}
        atomic_save(half, half_file(checkpoints, h, state["step"]))
    save_run(checkpoints, state["step"], {k: v for k, v in state.items() if k not in (
        "format", "step", "digests")}, keep=3, halves=2)  # fmt: skip


def test_a_gpu_checkpoint_resumes_exports_and_is_analysed_on_a_cpu(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    train(tiny_dataset, source, "max_steps=1")
    run_dir = tmp_path / "gpu-run"
    _as_a_gpu_wrote_it(source, run_dir / "checkpoints")
    shutil.rmtree(source)
    train(tiny_dataset, run_dir, "epochs=1")  # the epoch's other steps, on this CPU
    assert load_run(latest(run_dir))["step"] == STEPS_PER_EPOCH
    weights = tmp_path / "weights.pt"
    for command in (
        ["split_alexnet.export", f"checkpoint={run_dir}", f"out={weights}"],
        ["split_alexnet.analysis.figure3", f"checkpoints=[{run_dir}]", "permutations=100",
         f"out_dir={tmp_path / 'fig3'}"],
        ["split_alexnet.analysis.figure4", f"checkpoint={weights}",
         f"train_dir={tiny_dataset / 'train'}", f"query_dir={tiny_dataset / 'val'}",
         f"out_dir={tmp_path / 'fig4'}"],
    ):  # fmt: skip
        result = subprocess.run(
            [sys.executable, "-m", *command], capture_output=True, text=True, env=environment()
        )
        assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "fig3" / "grouped" / "gpu-run" / "kernels.png").is_file()
    assert json.loads((tmp_path / "fig4" / "figure4.json").read_text())["query_images"] == 12


def test_a_read_only_data_root_trains_with_its_cache_elsewhere(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    """data.cache_dir takes the cache and the statistics: nothing is written under the root."""
    root = tmp_path / "imagenet"
    shutil.copytree(tiny_dataset / "train", root / "train")
    shutil.copytree(tiny_dataset / "val", root / "val")
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    cache = tmp_path / "local-disk" / "cache"
    train(root, tmp_path / "run", f"data.cache_dir={cache}", "max_steps=1")
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    assert (cache / "train.u8").is_file() and list(cache.glob("stats-train-*.npz"))


def test_an_unwritable_cache_place_is_one_line_before_any_process_starts(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("")
    cache = tmp_path / "a-file" / "cache"
    result = train(tiny_dataset, tmp_path / "run", f"data.cache_dir={cache}", check=False)
    assert result.returncode == 2
    assert result.stdout + result.stderr == (
        f"error: cannot write the data cache in {cache} (Not a directory): "
        "set data.cache_dir to a writable folder\n"
    )


def test_conv1s_figure3_numbers_are_logged_every_n_steps(tiny_dataset: Path, tmp_path: Path):
    """Issue 16: S, CI, growth and angle from W₀ during training, equal to the same numbers
    computed afterwards from the checkpoint by the Figure 3 tool's own loaders."""
    from split_alexnet.analysis import conv1_diagnostics, load_conv1, recorded_initial_conv1

    run_dir = tmp_path / "run"
    train(tiny_dataset, run_dir, "max_steps=4", "conv1_every=2")
    records = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "conv1"]
    assert [r["step"] for r in records] == [0, 2, 4]
    # Step 0 is W₀ itself: no growth, no angle, nothing in ΔW to separate.
    assert records[0]["norm_growth/half0"] == 1.0
    assert records[0]["cos_W_W0/half1"] == pytest.approx(1.0, rel=1e-12)
    assert records[0]["S/dW"] == 0.0
    checkpoint = latest(run_dir)
    weights = torch.from_numpy(load_conv1(checkpoint)).float()
    initial = torch.from_numpy(recorded_initial_conv1(checkpoint))
    expected = conv1_diagnostics(weights.chunk(2), initial.chunk(2))
    logged = {k: v for k, v in records[-1].items() if k not in ("kind", "step", "time", "epoch")}
    assert logged == expected
    assert set(logged) >= {"S/W", "S/dW", "norm_growth/half0", "cos_W_W0/half1"}


def test_when_no_checkpoint_survives_the_run_starts_over_logging_each_step_once(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    train(tiny_dataset, run_dir, "max_steps=1")
    first = (run_dir / "metrics.jsonl").read_text()
    half = run_dir / "checkpoints" / "half0-step00000001.pt"
    data = bytearray(half.read_bytes())
    data[len(data) // 2] ^= 0x01
    half.write_bytes(bytes(data))
    result = train(tiny_dataset, run_dir, "max_steps=2")
    assert "checkpoint step 1 is not usable (half0-step00000001.pt does not match" in (
        result.stdout + result.stderr
    )
    steps = [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"]
    assert steps == [1, 2]
    assert (run_dir / "metrics.rewound.jsonl").read_text() == first  # the first life's record
