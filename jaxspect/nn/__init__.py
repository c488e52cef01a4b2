"""Neural networks used as regularisers and reconstructors."""

from ._cnn import PaperCNN as PaperCNN, count_parameters as count_parameters
from ._conv import conv3d as conv3d
