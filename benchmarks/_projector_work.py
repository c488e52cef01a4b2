"""The measurements of ``benchmarks/projector.py``, one per fresh process.

``python -m benchmarks._projector_work --worker JSON`` runs one ``kind`` and prints its result
(:func:`benchmarks._harness.worker_main`):

- ``machine``: the machine line and the cases' descriptions;
- ``time``: compile, warm up and time one (case, configuration, rotation, operation);
- ``rss``: the peak-RSS increase over one call of the same, in a fresh process;
- ``configs``: several (configuration, rotation) pairs of one case timed against the full
  bilinear one in rounds, in this one process, for paired ratios;
- ``floor``: the machine's measured bandwidth and FMA throughput, and each stage of one view
  timed alone (:mod:`benchmarks._floor`);
- ``peer``: PyTomography's ``SPECTSystemMatrix`` (built by
  :func:`benchmarks._pytomography_peer.build_system_matrix`) on the same problem, its calls
  interleaved with jaxspect's.
"""

from __future__ import annotations

import os
import statistics
import time

from benchmarks import _floor, _harness
from benchmarks.problems import PROJECTOR_CASES, projector_geometry, projector_phantom

# Configurations: (attenuation, PSF half width override or None for the case's, explicit PSF)
CONFIGS = {
    "full": (True, None, False),  # attenuation + the case's Gaussian PSF
    "no-attenuation": (False, None, False),
    "narrow-psf": (True, 1, False),  # 3 taps
    "rotate-sum": (False, 1, False),  # 3-tap PSF, no attenuation
    "explicit-psf": (True, None, True),  # the same Gaussian as an ExplicitPSF array
}


def problem(case_name: str, config: str, rotation: str, op: str):
    """``(function, arguments)`` of one measurement; the function is pure and jit-able, and
    takes the attenuation map and the geometry as arguments, as in a reconstruction loop."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxspect as js

    case = PROJECTOR_CASES[case_name]
    attenuation, half_width, explicit = CONFIGS[config]
    activity, mu = projector_phantom(case)
    geom = projector_geometry(case, psf_half_width=half_width, explicit_psf=explicit)
    image, mumap = jnp.asarray(activity), (jnp.asarray(mu) if attenuation else None)
    rng = np.random.default_rng(0)
    data = jnp.asarray(rng.uniform(0.0, 10.0, geom.views_shape).astype(np.float32))

    if op == "forward":
        fn = lambda x, mu, g: js.forward_project(x, mu, g, rotation=rotation)
        args = (image, mumap, geom)
    elif op == "back":
        fn = lambda v, mu, g: js.back_project(v, mu, g, rotation=rotation)
        args = (data, mumap, geom)
    elif op == "grad":
        def loss(x, mu, g, y):
            r = js.forward_project(x, mu, g, rotation=rotation) - y
            return 0.5 * jnp.sum(r * r)

        fn = jax.grad(loss)  # w.r.t. the image only: one forward and one back projection
        args = (image, mumap, geom, data)
    elif op == "jvp":
        # forward mode: the projection and its tangent A t (a second projection) in one call
        fn = lambda x, t, mu, g: jax.jvp(lambda x: js.forward_project(x, mu, g, rotation=rotation), (x,), (t,))
        args = (image, jnp.asarray(rng.standard_normal(case.shape).astype(np.float32)), mumap, geom)
    else:
        raise ValueError(op)
    jax.block_until_ready(args)
    return fn, args


def _time(spec):
    fn, args = problem(spec["case"], spec["config"], spec["rotation"], spec["op"])
    res = _harness.time_jitted(fn, args, spec["repeats"])
    res.pop("out"), res.pop("compiled")
    return res


def _configs(spec):
    """Each ``(configuration, rotation)`` in ``spec["configs"]`` (the full bilinear one among
    them) and each op in ``spec["ops"]``, compiled in this one process and timed in
    ``spec["rounds"]`` rounds; every round calls each of them once, in an order shifted by one
    each round. A configuration's ratio to the full one is taken per round, so the machine's
    slow drifts (other work, frequency), which moved figures measured minutes apart in
    separate processes by up to 12 % (the explicit PSF, the same work as the full one), hit
    both sides of a ratio alike."""
    import jax

    keys = [(config, rotation, op) for op in spec["ops"] for config, rotation in spec["configs"]]
    calls = {}
    for key in keys:
        fn, args = problem(spec["case"], *key)
        compiled = jax.jit(fn).lower(*args).compile()
        jax.block_until_ready(compiled(*args))  # warm-up
        calls[key] = (compiled, args)
    times = {key: [] for key in keys}
    for r in range(spec["rounds"]):
        for key in keys[r % len(keys):] + keys[: r % len(keys)]:
            compiled, args = calls[key]
            start = time.perf_counter()
            jax.block_until_ready(compiled(*args))
            times[key].append(time.perf_counter() - start)
    entries = []
    for (config, rotation, op), t in times.items():
        ratios = [a / b for a, b in zip(t, times[("full", "bilinear", op)])]
        entries.append(dict(config=config, rotation=rotation, op=op, times_s=t, median_s=statistics.median(t),
                            ratios=ratios, median_ratio=statistics.median(ratios)))
    return {"entries": entries}


def _rss(spec):
    import jax

    fn, args = problem(spec["case"], spec["config"], spec["rotation"], spec["op"])
    compiled = jax.jit(fn).lower(*args).compile()
    return _harness.rss_of_one_call(lambda: jax.block_until_ready(compiled(*args)))


def _machine(spec):
    cases = {k: dict(describe=c.describe(), shape=c.shape, taps=c.psf_size, nview=c.nview)
             for k, c in PROJECTOR_CASES.items()}
    return {"line": _harness.machine_line(), "cases": cases}


def _floor_kind(spec):
    import jax.numpy as jnp

    case = PROJECTOR_CASES[spec["case"]]
    activity, mu = projector_phantom(case)
    geom = projector_geometry(case)
    out = _floor.machine_peaks()
    out["stage_times_s"] = _floor.stage_times(jnp.asarray(activity), jnp.asarray(mu), geom,
                                              repeats=spec.get("repeats", 5))
    out["profile"] = {op: _floor.op_profile(*problem(case.name, "full", "bilinear", op), per=case.nview)
                      for op in ("forward", "back")}
    return out


def _peer(spec):
    """Time PyTomography's SPECT system matrix (forward and back) on the same problem.

    Matched: image grid and voxel size, phantom, attenuation map, number of views (equally
    spaced over 360 degrees), orbit radius, the FWHM(d) model and the PSF kernel size (see
    ``build_system_matrix``), float32, all CPU cores. What differs (PyTomography's design, not
    settings): it rotates a zero-padded volume (``ceil((sqrt(2) - 1) n / 2)`` voxels per side)
    with kornia's bilinear ``rotate`` and blurs every padded plane with point-sampled (not
    pixel-integrated) Gaussian taps and zero (not replicate) padding via grouped ``Conv1d``.

    jaxspect's forward and back projection (jit-compiled) are timed in this same process, one
    call before and one after every PyTomography call, so that the ratio compares the two
    under the same load.
    """
    import jax
    import numpy as np

    from benchmarks import _pytomography_peer as peer

    torch, pytomography = peer._import(os.cpu_count() or 1)
    case = PROJECTOR_CASES[spec["case"]]
    activity, mu = projector_phantom(case)
    system, info = peer.build_system_matrix(projector_geometry(case), mu)
    image = torch.tensor(peer.image_to_pytomography(activity))
    rng = np.random.default_rng(0)
    views = torch.tensor(peer.views_to_pytomography(
        rng.uniform(0, 10, (case.shape[0], case.shape[2], case.nview)).astype(np.float32)))

    ours = {}
    for op in ("forward", "back"):
        fn, args = problem(case.name, "full", spec["rotation"], op)
        compiled = jax.jit(fn).lower(*args).compile()
        jax.block_until_ready(compiled(*args))  # warm-up
        ours[op] = lambda c=compiled, a=args: jax.block_until_ready(c(*a))

    def clock(f):
        s = time.perf_counter()
        f()
        return time.perf_counter() - s

    def interleaved(peer_call, peer_warm_up, our_call):
        peer_warm_up()
        peer_times, our_times = [], [clock(our_call)]
        for _ in range(spec["repeats"]):
            peer_times.append(clock(peer_call))
            our_times.append(clock(our_call))  # one jaxspect call before and after each
        return peer_times, our_times

    # PyTomography runs eagerly (nothing to compile): warm it up on a single view (a one-view
    # "subset"), cheap even at the paper's size, then time full projections.
    system.set_n_subsets(case.nview)
    with torch.no_grad():
        fwd, our_fwd = interleaved(lambda: system.forward(image),
                                   lambda: system.forward(image, subset_idx=0), ours["forward"])
        back, our_back = interleaved(lambda: system.backward(views),
                                     lambda: system.backward(views[:1], subset_idx=0), ours["back"])
    return {
        "torch": torch.__version__,
        "pytomography": pytomography.__version__,
        "threads": torch.get_num_threads(),
        "kernel": info.get("psf_taps_pytomography_max_radius"),
        "rotation": spec["rotation"],
        "forward_s": statistics.median(fwd),
        "back_s": statistics.median(back),
        "jaxspect_forward_s": statistics.median(our_fwd),
        "jaxspect_back_s": statistics.median(our_back),
    }


KINDS = {"time": _time, "rss": _rss, "configs": _configs, "machine": _machine, "floor": _floor_kind, "peer": _peer}

if __name__ == "__main__":
    _harness.worker_main(KINDS)
