"""Which operators a block of code calls: tells a fused C++ kernel from its eager fallback."""

from __future__ import annotations

from torch.overrides import TorchFunctionMode


class OperatorCalls(TorchFunctionMode):
    """`names`: str() of every torch function and operator called inside the block, in order
    (custom operators read "split_alexnet.lrn_pool" and so on)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))
