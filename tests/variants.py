"""The networks the `model=` options select, read from conf/model/ as a run reads them."""

from __future__ import annotations

import importlib.resources

from omegaconf import OmegaConf

from split_alexnet import Variant


def model_option(name: str) -> Variant:
    """The network `model=<name>` selects (conf/model/<name>.yaml)."""
    path = importlib.resources.files("split_alexnet.conf").joinpath("model", f"{name}.yaml")
    return Variant(**OmegaConf.to_container(OmegaConf.load(str(path))))
