"""OS-EM / ML-EM over many patients at once, the patient axis sharded across all devices.

One compiled program reconstructs a batch of patients: every device runs the vmapped EM on its
share of the patients (``jax.shard_map`` over a 1-D ``Mesh`` of the devices, axis
``"patients"``), with no communication between devices. The same call runs on one CPU, on
several GPUs or on a TPU slice; the number of patients is padded up to a multiple of the device
count (with copies of the first patient) and the padding is stripped from the result.

Multi-host (several processes, e.g. a TPU pod slice or a GPU cluster): call
``jax.distributed.initialize()`` in every process before anything else touches JAX; then
``jax.devices()`` lists the devices of all hosts, the mesh spans them, and every process calls
:func:`batch_osem` with the *same* full batch (each process only transfers the patients its own
devices hold, via ``jax.make_array_from_callback``). The result is a global array sharded over
all hosts; read the local part with ``result.addressable_shards`` or gather it on every host
with ``jax.experimental.multihost_utils.process_allgather(result)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .._operator import AbstractProjector, check_projector
from ._em import mlem, osem

AXIS = "patients"


def stack_projectors(projectors: Sequence[AbstractProjector]) -> AbstractProjector:
    """Stack per-patient projectors (:class:`jaxspect.AbstractProjector` s of one type: for
    :class:`jaxspect.SPECTProjector` the same image shape, number of views, rotation method
    and PSF type) into one batched projector whose array leaves have a leading patient axis
    ``P``: different mumaps, orbits and angles per patient are fine."""
    projectors = list(projectors)
    if not projectors:
        raise ValueError("projectors must not be empty")
    for p in projectors:
        check_projector(p, "every entry of projectors")
    structures = {jax.tree_util.tree_structure(eqx.filter(p, eqx.is_array)) for p in projectors}
    statics = {jax.tree_util.tree_structure(p) for p in projectors}
    shapes = {tuple(x.shape for x in jax.tree_util.tree_leaves(eqx.filter(p, eqx.is_array))) for p in projectors}
    if len(structures) != 1 or len(statics) != 1 or len(shapes) != 1:
        raise ValueError("projectors must share image shape, number of views, rotation and PSF type to be stacked")
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs) if eqx.is_array(xs[0]) else xs[0], *projectors)


def _batch_size(projectors, name="projectors"):
    leaves = jax.tree_util.tree_leaves(eqx.filter(projectors, eqx.is_array))
    if not leaves:
        raise ValueError(f"{name} has no arrays to batch over")
    sizes = {leaf.shape[0] if leaf.ndim else None for leaf in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"every array in {name} must have the same leading patient axis, got sizes {sorted(map(str, sizes))}")
    return sizes.pop()


def patient_mesh(devices=None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all of ``jax.devices()``), axis ``"patients"``."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (AXIS,))


def _pad(x, padded):
    """Pad the leading axis to ``padded`` with copies of entry 0 (valid data, finite results)."""
    x = np.asarray(x)
    extra = padded - x.shape[0]
    if extra == 0:
        return x
    return np.concatenate([x, np.repeat(x[:1], extra, axis=0)], axis=0)


def _place(x, sharding, padded):
    """A global array sharded along axis 0, built from a host array per addressable shard."""
    host = _pad(x, padded)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _batch_em(method, projectors, counts, x0, background, devices, strip_padding, **options):
    check_projector(projectors, "projectors")
    n = _batch_size(projectors)
    counts = np.asarray(counts)
    if counts.ndim != 4 or counts.shape[0] != n:
        raise ValueError(f"counts must have shape (P, nx, nz, nview) with P = {n} patients, got {counts.shape}")
    x0 = np.broadcast_to(np.ones((), counts.dtype) if x0 is None else np.asarray(x0), (n, *projectors.in_shape))
    background = np.zeros((), counts.dtype) if background is None else np.asarray(background)
    background = np.broadcast_to(background, (n, *counts.shape[1:])) if background.ndim in (0, 3) else background
    if background.shape != counts.shape:
        raise ValueError(f"background must be a scalar, (nx, nz, nview) or {counts.shape}, got {background.shape}")

    mesh = patient_mesh(devices)
    n_dev = mesh.devices.size
    padded = -(-n // n_dev) * n_dev
    sharding = NamedSharding(mesh, PartitionSpec(AXIS))
    params, static = eqx.partition(projectors, eqx.is_array)
    params = jax.tree_util.tree_map(lambda p: _place(p, sharding, padded), params)
    counts, x0, background = (_place(a, sharding, padded) for a in (counts, x0, background))
    images = _run(params, static, counts, x0, background, mesh, method, tuple(sorted(options.items())))
    if not strip_padding or padded == n:
        return images
    return images[:n]


@eqx.filter_jit
def _run(params, static, counts, x0, background, mesh, method, options):
    options = dict(options)
    em = osem if method == "osem" else mlem

    def local(params, counts, x0, background):
        def one(p, y, x, r):
            return em(eqx.combine(p, static), y, x, background=r, **options).image

        return eqx.filter_vmap(one)(params, counts, x0, background)

    spec = PartitionSpec(AXIS)
    # check_vma=False: equinox runtime checks (eqx.error_if) branch on per-device values
    return jax.shard_map(local, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)(params, counts, x0, background)


def batch_osem(
    projectors: AbstractProjector, counts, x0=None, *, n_iter: int, n_subsets: int, background=None, devices=None,
    strip_padding: bool = True,
):
    """OS-EM for ``P`` patients, sharded over ``devices`` (default all).

    Arguments:
        projectors: a batched :class:`jaxspect.AbstractProjector` whose array leaves all have
            a leading patient axis ``P`` (see :func:`stack_projectors`, or ``eqx.filter_vmap``
            the construction of a :class:`jaxspect.SPECTProjector` over stacked mumaps/radii).
        counts: ``(P, nx, nz, nview)`` measured counts.
        x0: start images ``(P, nx, ny, nz)`` or one ``(nx, ny, nz)`` for all; default ones.
        n_iter, n_subsets: as in :func:`jaxspect.osem`.
        background: scatter, a scalar, ``(nx, nz, nview)`` or ``(P, nx, nz, nview)``.
        devices: the devices to shard the patients over (default ``jax.devices()``).
        strip_padding: return exactly ``P`` images (default). With ``P`` a multiple of the
            device count the result stays sharded along the patient axis; otherwise the slice
            that drops the padding cannot be split evenly and JAX returns it replicated on the
            devices (every host can read all of it). ``False`` returns the padded
            ``(P_padded, nx, ny, nz)`` array, sharded ``P_padded / n_devices`` patients per
            device (the padding rows are copies of patient 0's reconstruction).

    Returns:
        ``(P, nx, ny, nz)`` images as a ``jax.Array`` (equal to ``eqx.filter_vmap`` of
        :func:`jaxspect.osem` up to float rounding).
    """
    return _batch_em("osem", projectors, counts, x0, background, devices, strip_padding,
                     n_iter=n_iter, n_subsets=n_subsets)


def batch_mlem(
    projectors: AbstractProjector, counts, x0=None, *, n_iter: int, background=None, devices=None, strip_padding: bool = True
):
    """ML-EM for ``P`` patients, sharded over ``devices``; arguments as :func:`batch_osem`."""
    return _batch_em("mlem", projectors, counts, x0, background, devices, strip_padding, n_iter=n_iter)
