"""Sharded batch reconstruction: 5 patients on 4 (forced host) devices == vmapped OSEM.

The device count must be set before JAX starts, so the check runs in a subprocess.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json
import equinox as eqx, jax, jax.numpy as jnp, numpy as np
import jaxspect as js
from jaxspect.recon._batch import batch_osem, stack_projectors

assert jax.device_count() == 4, jax.devices()
n, nz, nview, P = 8, 2, 4, 5
shape, vs = (n, n, nz), (4.0, 4.0, 4.0)
rng = np.random.default_rng(0)
projectors, counts = [], []
for p in range(P):  # different attenuation maps and orbits per patient
    mu = np.zeros(shape, np.float32)
    mu[2:6, 2:6] = 0.01 * (1 + p)
    geometry = js.SPECTGeometry(shape, vs, js.GaussianPSF(2.0, 0.05), nview=nview, radii=40.0 + 2 * p)
    a = js.SPECTProjector(geometry, jnp.asarray(mu))
    projectors.append(a)
    counts.append(rng.poisson(10 * np.asarray(a(jnp.asarray(rng.random(shape), jnp.float32)))).astype(np.float32))
A, Y = stack_projectors(projectors), np.stack(counts)
background = np.full(Y.shape, 0.5, np.float32)

padded = batch_osem(A, Y, n_iter=2, n_subsets=2, background=background, strip_padding=False)
images = batch_osem(A, Y, n_iter=2, n_subsets=2, background=background)
ref = eqx.filter_vmap(lambda a, y, r: js.osem(a, y, jnp.ones(shape), n_iter=2, n_subsets=2, background=r).image)(
    A, jnp.asarray(Y), jnp.asarray(background))
print(json.dumps({
    "shape": list(images.shape),
    "padded_shape": list(padded.shape),
    "padded_spec_is_patients": padded.sharding.spec == jax.sharding.PartitionSpec("patients"),
    "padded_devices": len(padded.sharding.device_set),
    "shard_rows": sorted(s.data.shape[0] for s in padded.addressable_shards),
    "images_devices": len(images.sharding.device_set),
    "osem_err": float(np.abs(np.asarray(images) - np.asarray(ref)).max()),
    "padding_is_patient_0": bool(np.array_equal(np.asarray(padded)[5], np.asarray(padded)[0])),
    "scale": float(np.abs(np.asarray(ref)).max()),
}))
"""


def test_batch_osem_sharded_over_four_devices_equals_vmap():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["shape"] == [5, 8, 8, 2]
    assert out["padded_shape"] == [8, 8, 8, 2]  # 5 patients padded to a multiple of 4 devices
    assert out["padded_spec_is_patients"] and out["padded_devices"] == 4
    assert out["shard_rows"] == [2, 2, 2, 2]  # two patients per device
    assert out["images_devices"] == 4
    assert out["padding_is_patient_0"]
    assert out["osem_err"] <= 1e-5 * out["scale"]


def test_batch_mlem_in_process_and_errors():
    import equinox as eqx
    import jax.numpy as jnp
    import numpy as np

    import jaxspect as js
    from jaxspect.recon._batch import batch_mlem, batch_osem, stack_projectors

    geometry = js.SPECTGeometry((4, 4, 1), (4.0,) * 3, js.GaussianPSF(2.0, 0.05), nview=2, radii=30.0)
    A = stack_projectors([js.SPECTProjector(geometry, jnp.zeros((4, 4, 1))), js.SPECTProjector(geometry, jnp.full((4, 4, 1), 0.01))])
    y = np.random.default_rng(1).poisson(5.0, (2, 4, 1, 2)).astype(np.float32)
    images = batch_mlem(A, y, n_iter=3, background=0.1)
    ref = eqx.filter_vmap(lambda a, yy: js.mlem(a, yy, jnp.ones((4, 4, 1)), n_iter=3, background=0.1).image)(A, y)
    np.testing.assert_allclose(np.asarray(images), np.asarray(ref), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"counts must have shape \(P, nx, nz, nview\) with P = 2"):
        batch_osem(A, np.ones((3, 4, 1, 2), np.float32), n_iter=1, n_subsets=1)
    other = js.SPECTGeometry((4, 4, 1), (4.0,) * 3, js.GaussianPSF(2.0, 0.05), nview=3, radii=30.0)
    with pytest.raises(ValueError, match="must share image shape, number of views"):
        stack_projectors([js.SPECTProjector(geometry), js.SPECTProjector(other)])
    assert jnp.asarray(A.geometry.radii).shape == (2, 2)
