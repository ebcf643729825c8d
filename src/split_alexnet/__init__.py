"""AlexNet (Krizhevsky, Sutskever, Hinton 2012) as the paper built it: two halves, two devices."""

from split_alexnet.layers import Variant, layer_table, parameter_count
from split_alexnet.reference import ReferenceAlexNet
from split_alexnet.split import SplitAlexNet

__all__ = ["ReferenceAlexNet", "SplitAlexNet", "Variant", "layer_table", "parameter_count"]
