"""Write a checkpoint's weights as one reference-layout state dict (Caffe's bvlc_alexnet blobs).

split-alexnet-export checkpoint=runs/r1 out=alexnet.pt
python -m split_alexnet.train init_from=alexnet.pt ...   # start a run from such a dict
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import torch

from split_alexnet.cli import run_command
from split_alexnet.config import ExportConfig, register
from split_alexnet.training.checkpoint import reference_state
from split_alexnet.training.files import atomic_save

log = logging.getLogger("split_alexnet")


def export(checkpoint: Path, out: Path) -> dict[str, torch.Tensor]:
    """Both halves of `checkpoint`, joined in this process, saved to `out`."""
    state = reference_state(checkpoint)
    atomic_save(state, out)
    return state


register()


@hydra.main(version_base=None, config_path="pkg://split_alexnet.conf", config_name="export")
def main(cfg: ExportConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run_command(lambda: export(Path(cfg.checkpoint), Path(cfg.out)))
    log.info("wrote the reference-layout state dict of %s to %s", cfg.checkpoint, cfg.out)


if __name__ == "__main__":
    main()
