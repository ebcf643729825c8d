"""AlexNet (Krizhevsky, Sutskever, Hinton 2012) as the paper built it: two halves, two devices."""

from split_alexnet.model.reference import ReferenceAlexNet
from split_alexnet.model.split import SplitAlexNet
from split_alexnet.model.table import Variant, layer_table, parameter_count

__all__ = ["ReferenceAlexNet", "SplitAlexNet", "Variant", "layer_table", "parameter_count"]
