"""compiled: opt-in torch.compile for the hot element-wise kernels, with an exact eager fallback."""

from split_alexnet.compiled.kernels import OptInKernels

__all__ = ["OptInKernels"]
