"""Model files: a JSON line describing the architecture, then the arrays.

``save_model(path, model)`` writes the model's architecture (for the model types jaxspect
knows: its networks and the unrolled EM) as one JSON line, then every array with
``eqx.tree_serialise_leaves`` (batch-norm statistics included). ``load_model(path)`` rebuilds
the architecture from that line and reads the arrays into it, so a trained model can be loaded
without the code that built it (the command line's ``reconstruct --model`` does this). For
other modules, pass a template: ``load_model(path, like=MyModule(...))``.

Model types register how to describe and rebuild themselves with :func:`register_model`.
"""

from __future__ import annotations

import json
from typing import Callable

import equinox as eqx

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
    with open(path, "wb") as f:
        f.write((json.dumps(config) + "\n").encode())
        eqx.tree_serialise_leaves(f, model)


def read_model_config(path) -> dict:
    """The architecture line of a file written by :func:`save_model`."""
    with open(path, "rb") as f:
        line = f.readline()
    try:
        config = json.loads(line.decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        config = None
    if not isinstance(config, dict) or "kind" not in config:
        raise ValueError(f"{path} is not a jaxspect model file (written by jaxspect.save_model)")
    return config


def load_model(path, like: eqx.Module | None = None) -> eqx.Module:
    """Read a model written by :func:`save_model`. Without ``like`` the architecture comes from
    the file (registered model types only); with ``like`` the arrays are read into that
    template, which must have the saved structure and shapes."""
    config = read_model_config(path)
    if like is None:
        if config["kind"] is None:
            raise ValueError(f"{path} holds a model of an unregistered type: pass like=<a model of that architecture>")
        like = build_model(config)
    with open(path, "rb") as f:
        f.readline()
        return eqx.tree_deserialise_leaves(f, like)
