"""The scaled Figure 3 experiment's input: fewer pixels, and the grey-input control (issue 16).

Not the paper's network. Every kernel count and group is kept, but conv1 reads
a 112×112 image: the paper's 224×224 view (same crop, reflection, mean and
colour noise, data/views.py) averaged over 2×2 pixels. fc6 then reads pool5's
2×2 maps, not 6×6 (1,024 inputs a half, not 4,608), and a step costs about a
quarter of the paper's, which is what makes 10⁴ steps possible on a CPU.

Averaging commutes with the mean subtraction and the colour shift, both linear,
so this is the view a 128×128 image would give at half the crop offsets.

The grey control gives every pixel R = G = B = its luminance: no kernel can
find colour, so the halves' chromatic indices cannot separate (Figure 3's null).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from split_alexnet.data.folder import CROP

# ITU-R BT.601 luma weights, as torchvision's rgb_to_grayscale.
LUMINANCE = (0.299, 0.587, 0.114)


def check_image_size(image_size: int) -> int:
    """The pooling factor that takes the 224 view to `image_size`; one line if none does."""
    if image_size <= 0 or CROP % image_size:
        raise ValueError(
            f"model.image_size={image_size} does not divide the {CROP}-pixel view: use {CROP} "
            f"(the paper) or {CROP // 2} (the scaled Figure 3 experiment)"
        )
    return CROP // image_size


def scaled_input(images: torch.Tensor, image_size: int = CROP, grey: bool = False) -> torch.Tensor:
    """Network input (N, [10,] 3, image_size, image_size) from the finished 224 views."""
    factor = check_image_size(image_size)
    if factor == 1 and not grey:
        return images
    x = images.flatten(0, -4)
    if factor > 1:
        x = F.avg_pool2d(x, factor)
    if grey:
        weights = torch.tensor(LUMINANCE, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x * weights).sum(1, keepdim=True).expand_as(x).contiguous()
    return x.view(*images.shape[:-2], image_size, image_size)
