"""One switch for a family of kernels that run eager, or torch.compile'd into fused loops.

LRN's forward and backward (model/lrn.py) and the loader's float passes
(data/views.py) each come in two forms: an eager one of a few in-place
passes, exact and always available, and one written out of place for
Inductor to fuse into a single loop. Both are off by default and turned on
by a call or an environment variable. This module holds what the two share:
compiling each kernel once, tracing it with a symbolic batch size, checking its
first result against the eager form's, and falling back to the eager form, with
one warning, if the compiler fails or the check does. The check is not
paranoia: with torch 2.14.1 on an AVX-512 CPU told ATEN_CPU_CAPABILITY=avx2,
Inductor's loops compile and run but leave half of every output zero
(docs/performance.md). It imports only torch, so that the model and the data,
which may not import each other (tests/test_model.py), can both use it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch


class OptInKernels:
    """Kernels of one family (`what`: "LRN", "finish"), compiled when `enabled`.

    `enabled` starts as the environment variable `variable` == "1".
    `compiled` maps a kernel's name to its compiled form, or to False once
    compiling or checking it has failed (then it stays eager for the process's life).
    """

    def __init__(self, what: str, variable: str) -> None:
        self.what = what
        self.enabled = os.environ.get(variable, "0") == "1"
        self.compiled: dict[str, Callable[..., Any] | Literal[False]] = {}

    def __call__(
        self,
        name: str,
        eager: Callable[..., Any],
        fused: Callable[..., Any],
        *args: Any,
        batched: Iterable[torch.Tensor],
        agree: Callable[[Any, Any], bool],
    ) -> Any:
        """eager(*args), or fused(*args) compiled once; `batched` lists the args whose
        first dimension is the batch; agree(compiled result, eager result) judges the
        compiled kernel's first call."""
        kernel = self.compiled.get(name)
        if not self.enabled or kernel is False:
            return eager(*args)
        first = kernel is None
        if first:
            kernel = self.compiled[name] = torch.compile(fused, fullgraph=True, dynamic=None)
        for tensor in batched:
            # Traced with a symbolic batch from the first call: a new batch size (an
            # epoch's last batch, validation) then reuses the kernel, where dynamo would
            # otherwise recompile once more (tests/test_compile.py).
            torch._dynamo.maybe_mark_dynamic(tensor, 0)
        try:
            result = kernel(*args)
        except Exception as error:  # any compiler failure: the eager kernel is exact too
            self._give_up(name, f"failed ({type(error).__name__}: {error})")
            return eager(*args)
        if first:
            expected = eager(*args)
            if not agree(result, expected):
                self._give_up(name, "disagrees with the eager kernel")
                return expected
        return result

    def _give_up(self, name: str, why: str) -> None:
        """Warn once; kernel `name` runs eager from now on."""
        warnings.warn(f"compiled {self.what} {why}; running eager", stacklevel=4)
        self.compiled[name] = False
