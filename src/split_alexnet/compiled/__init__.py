"""compiled: the hot element-wise kernels, torch.compile'd (kernels.py) or hand-written in C++
(native.py), each with an eager fallback."""

from split_alexnet.compiled.kernels import OptInKernels

__all__ = ["OptInKernels"]
