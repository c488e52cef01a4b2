"""Model files: a JSON line describing the architecture, then the arrays.

``save_model(path, model)`` writes the model's architecture (for the model types jaxspect
knows: its networks and the unrolled EM) as one JSON line, then every array with
``eqx.tree_serialise_leaves`` (batch-norm statistics included). ``load_model(path)`` rebuilds
the architecture from that line and reads the arrays into it, so a trained model can be loaded
without the code that built it (the command line's ``reconstruct --model`` does this). For
other modules, pass a template: ``load_model(path, like=MyModule(...))``.

Model types register how to describe and rebuild themselves with :func:`register_model`.

A model file cannot run code (JSON and ``numpy.save`` arrays only) and cannot make
``load_model`` allocate more than the file holds: the architecture line is range-checked, the
architecture is built abstractly (``eqx.filter_eval_shape``, no arrays) and its array bytes are
compared with the file's size before anything is read. Files are written atomically (temporary
file + rename).
"""

from __future__ import annotations

import json
import math
import os
from typing import Callable

import equinox as eqx
import jax

from .io._safety import FileCheckError, atomic_write

_MAX_CONFIG_BYTES = 1 << 16  # the architecture line
_MAX_CONFIG_INT = 1 << 31

_CONFIG: dict[type, Callable[[eqx.Module], dict]] = {}
_BUILD: dict[str, Callable[[dict], eqx.Module]] = {}


def register_model(cls: type, config: Callable[[eqx.Module], dict], build: Callable[[dict], eqx.Module]) -> None:
    """Make ``cls`` loadable without a template: ``config(model)`` returns a JSON-serialisable
    dict describing the architecture (no weights), ``build(config)`` returns a model of that
    architecture (any weights)."""
    _CONFIG[cls] = config
    _BUILD[cls.__name__] = build


def model_config(model: eqx.Module) -> dict:
    """The architecture of ``model`` as a dict with a ``"kind"`` entry (TypeError if unknown)."""
    config = _CONFIG.get(type(model))
    if config is None:
        raise TypeError(f"{type(model).__name__} is not a registered model type (known: {', '.join(sorted(_BUILD))}); "
                        "save it anyway with save_model and load it with load_model(path, like=template)")
    return {"kind": type(model).__name__, **config(model)}


def build_model(config: dict) -> eqx.Module:
    """A model of the architecture ``config`` (as returned by :func:`model_config`)."""
    kind = config.get("kind")
    if kind not in _BUILD:
        raise ValueError(f"unknown model kind {kind!r} (known: {', '.join(sorted(_BUILD))})")
    return _BUILD[kind]({k: v for k, v in config.items() if k != "kind"})


def save_model(path, model: eqx.Module) -> None:
    """Write ``model`` to ``path``: its architecture as a JSON line (``{"kind": null}`` for
    unregistered types), then its arrays."""
    try:
        config = model_config(model)
    except TypeError:
        if not isinstance(model, eqx.Module):
            raise TypeError(f"model must be an Equinox module, got {type(model).__name__}") from None
        config = {"kind": None}
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        f.write((json.dumps(config) + "\n").encode())
        eqx.tree_serialise_leaves(f, model)


def read_model_config(path) -> dict:
    """The architecture line of a file written by :func:`save_model`."""
    with open(path, "rb") as f:
        line = f.readline(_MAX_CONFIG_BYTES)
    try:
        config = json.loads(line.decode()) if line.endswith(b"\n") else None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        config = None
    if not isinstance(config, dict) or "kind" not in config:
        raise FileCheckError(f"{path} is not a jaxspect model file (written by jaxspect.save_model)")
    _check_config_values(config, path)
    return config


def _check_config_values(value, path, where="", depth=0) -> None:
    """Numbers in the architecture line must be finite and integers within int32-ish range."""
    if depth > 8:
        raise FileCheckError(f"model file {path}: its architecture line is nested too deeply")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_config_values(v, path, f"{where}.{k}" if where else k, depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_config_values(v, path, f"{where}[{i}]", depth + 1)
    elif isinstance(value, bool) or value is None or isinstance(value, str):
        return
    elif isinstance(value, int):
        if abs(value) >= _MAX_CONFIG_INT:
            raise FileCheckError(f"model file {path}: '{where}' = {value} is out of range")
    elif isinstance(value, float):
        if not math.isfinite(value) or abs(value) >= _MAX_CONFIG_INT:
            raise FileCheckError(f"model file {path}: '{where}' = {value} is not a finite number in range")


def _array_bytes(tree) -> int:
    leaves = jax.tree_util.tree_leaves(eqx.filter(tree, lambda x: hasattr(x, "shape") and hasattr(x, "dtype")))
    return sum(math.prod(x.shape) * jax.numpy.dtype(x.dtype).itemsize for x in leaves)


def load_model(path, like: eqx.Module | None = None) -> eqx.Module:
    """Read a model written by :func:`save_model`. Without ``like`` the architecture comes from
    the file (registered model types only); with ``like`` the arrays are read into that
    template, which must have the saved structure and shapes."""
    config = read_model_config(path)
    if like is None:
        if config["kind"] is None:
            raise ValueError(f"{path} holds a model of an unregistered type: pass like=<a model of that architecture>")
        try:  # abstractly: no array exists until the file's arrays are read into it
            like = eqx.filter_eval_shape(build_model, config)
        except (ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
            reason = f"it lacks the entry {e}" if isinstance(e, KeyError) else str(e)
            raise FileCheckError(f"model file {path} ({config.get('kind')}) cannot be built from its architecture "
                                 f"line: {reason}") from None
    with open(path, "rb") as f:
        f.readline(_MAX_CONFIG_BYTES)
        needed, available = _array_bytes(like), os.fstat(f.fileno()).st_size - f.tell()
        if available < needed:
            raise FileCheckError(f"model file {path} holds {available} bytes of arrays, but its architecture "
                                 f"({config.get('kind')}) needs at least {needed}: truncated or inconsistent")
        try:
            return eqx.tree_deserialise_leaves(f, like)
        except (ValueError, TypeError, EOFError, RuntimeError, OSError) as e:
            raise FileCheckError(f"model file {path}: its arrays do not match its architecture ({config.get('kind')}): "
                                 f"{type(e).__name__}: {e}") from None
