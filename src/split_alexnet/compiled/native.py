"""Hand-written C++ kernels of this package, built on first use by torch's extension builder.

A kernel's source sits beside this file (`lrn_pool.cpp`) and registers its
operators under torch.ops.split_alexnet. It is compiled once per machine and
instruction set (about 10 s, cached by torch in ~/.cache/torch_extensions or
$TORCH_EXTENSIONS_DIR), for the vector width ATen itself runs at, and with
floating-point contraction off so that results round as the eager kernels'
do, and with OpenMP where ATen parallelises with it, so that a kernel's
`at::parallel_for` runs on ATen's threads (a compiler without OpenMP gets a
one-thread build and a warning). If the build fails (no C++ compiler, no
ninja), the caller is told so once, by a warning, and keeps its eager path.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from functools import cache
from pathlib import Path

import torch

# No FMA contraction: each operation rounds as torch's eager kernels do. Without errno,
# sqrt vectorises (the same IEEE result; only C's error reporting is dropped).
_FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno"]
# at::parallel_for is inline: in an OpenMP build of ATen it splits work among threads only
# where the caller is compiled with OpenMP, and otherwise runs on one thread. The OpenMP
# runtime itself is torch's, already loaded (libtorch_cpu needs it), so it is not linked.
_PARALLEL_FLAGS = ["-fopenmp"] if torch.backends.openmp.is_available() else []
# ATen's own dispatch level (ATEN_CPU_CAPABILITY can lower it), as compiler flags: the
# kernel then never uses an instruction the rest of the process was told to avoid.
_ISA_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma"],
    "AVX2": ["-mavx2", "-mfma"],
}


@cache
def load(kernel: str) -> bool:
    """Build and load `kernel`.cpp once per process; whether its operators are there."""
    capability = torch.backends.cpu.get_cpu_capability()
    # The first step of a run waits for this: say why.
    logging.getLogger(__name__).info(
        "loading the C++ kernel %s (built once per machine, about 10 s)", kernel
    )
    flags = [*_FLAGS, *_ISA_FLAGS.get(capability, [])]
    try:
        _find_ninja()
        try:
            _build(kernel, capability, [*flags, *_PARALLEL_FLAGS])
        except Exception:
            if not _PARALLEL_FLAGS:
                raise
            # A compiler without OpenMP (Apple's clang): one thread is better than none.
            _build(kernel, capability, flags)
            warnings.warn(
                f"built the C++ kernel {kernel} without OpenMP: it runs on one thread",
                stacklevel=3,
            )
    except Exception as error:  # no compiler, no ninja, a failed build: stay eager
        warnings.warn(
            f"could not build the C++ kernel {kernel} ({type(error).__name__}: {error}); "
            "running eager",
            stacklevel=3,
        )
        return False
    return True


def _build(kernel: str, capability: str, flags: list[str]) -> None:
    from torch.utils.cpp_extension import load as build

    build(
        f"split_alexnet_{kernel}_{capability.lower()}",
        sources=[str(Path(__file__).with_name(f"{kernel}.cpp"))],
        extra_cflags=flags,
        is_python_module=False,
    )


def _find_ninja() -> None:
    """torch's builder runs `ninja` from PATH: add the PyPI package's when none is there."""
    if shutil.which("ninja"):
        return
    import ninja  # a dependency of this package

    os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, os.environ.get("PATH", "")])
