"""Neural networks used as regularisers and reconstructors."""

from ._cnn import PaperCNN as PaperCNN, count_parameters as count_parameters
from ._conv import conv3d as conv3d

# The equivariant networks need e3nn-jax, whose import takes a few seconds: loaded on first use.
_LAZY = {
    "EquivariantConv2d": "_equivariant", "EquivariantConv3d": "_equivariant",
    "EquivariantInstanceNorm": "_equivariant", "Gate": "_equivariant", "NormActivation": "_equivariant",
    "gate_irreps": "_equivariant", "SCNN": "_denoisers", "SCNN2d": "_denoisers", "SCNN3d": "_denoisers",
    "PlainCNN": "_denoisers", "baseline_cnn": "_denoisers", "small_cnn": "_denoisers",
    "describe_parameters": "_denoisers",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])
