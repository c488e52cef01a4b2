"""Regularised reconstruction: priors, OSL-EM, BSREM, Gaussian post-filter."""

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
import scipy.optimize
import scipy.special

import jaxspect as js
from jaxspect.phantoms import ellipsoid

from .conftest import random_symmetric_psf, small_problem
from .test_em import SHAPE, problem


# --- priors ------------------------------------------------------------------------------------


def brute_force_energy(x, phi, voxel_size, kappa=None):
    """Sum of ``w_jk phi(x_j, x_k)`` over every unordered 26-neighbour pair, by explicit loops."""
    vs = np.asarray(voxel_size)
    total = 0.0
    shape = x.shape
    for p in itertools.product(*(range(n) for n in shape)):
        for o in itertools.product((-1, 0, 1), repeat=3):
            q = tuple(np.add(p, o))
            if o == (0, 0, 0) or not all(0 <= q[i] < shape[i] for i in range(3)):
                continue
            w = vs.min() / np.linalg.norm(np.asarray(o) * vs)
            if kappa is not None:
                w *= kappa(p, q)
            total += 0.5 * w * phi(x[p], x[q])  # every pair is met twice
    return total


def rdp(gamma, eps):
    return lambda a, b: (a - b) ** 2 / (a + b + gamma * abs(a - b) + eps)


def test_neighbour_energies_match_explicit_pair_sums(rng, x64):
    x = rng.random((4, 5, 3)) * 3
    vs = (2.0, 2.0, 3.5)
    labels = rng.integers(0, 2, x.shape)
    q = js.QuadraticPrior(vs)
    energy = eqx.filter_jit(lambda p, v: p(v))
    assert float(energy(q, jnp.asarray(x))) == pytest.approx(brute_force_energy(x, lambda a, b: (a - b) ** 2 / 2, vs), rel=1e-12)
    weighted = js.RelativeDifferencePrior(1.5, 0.1, vs, weights=js.anatomical_weights(jnp.asarray(labels)))
    same_label = lambda p, q: float(labels[p] == labels[q])
    assert float(energy(weighted, jnp.asarray(x))) == pytest.approx(brute_force_energy(x, rdp(1.5, 0.1), vs, same_label), rel=1e-12)
    ct = rng.random(x.shape)
    soft = js.QuadraticPrior(vs, weights=js.anatomical_weights(jnp.asarray(ct), sigma=0.3))
    similarity = lambda p, q: np.exp(-((ct[p] - ct[q]) ** 2) / (2 * 0.3**2))
    assert float(energy(soft, jnp.asarray(x))) == pytest.approx(
        brute_force_energy(x, lambda a, b: (a - b) ** 2 / 2, vs, similarity), rel=1e-12)


@pytest.mark.parametrize("name", ["quadratic", "rdp", "rdp_weighted", "function"])
def test_prior_gradients_equal_finite_differences(rng, x64, name):
    x = jnp.asarray(rng.random((5, 4, 3)) + 0.05)
    x = x.at[0, 0, 0].set(0.0).at[0, 1, 0].set(0.0)  # a zero pair (RDP's epsilon at work)
    vs = (3.0, 3.0, 4.0)
    prior = {
        "quadratic": js.QuadraticPrior(vs),
        "rdp": js.RelativeDifferencePrior(gamma=2.0, epsilon=1e-2, voxel_size=vs),
        "rdp_weighted": js.RelativeDifferencePrior(
            0.5, 1e-2, vs, weights=js.anatomical_weights(jnp.asarray(rng.random(x.shape)), sigma=0.5)),
        "function": js.FunctionPrior(lambda v: jnp.sum(jnp.sqrt(jnp.diff(v, axis=0) ** 2 + 1e-2)) + jnp.sum(v**3)),
    }[name]
    energy, gradient = eqx.filter_jit(lambda p, v: p(v)), eqx.filter_jit(lambda p, v: p.gradient(v))
    grad = np.asarray(gradient(prior, x))
    curvature = np.asarray(eqx.filter_jit(lambda p, v: p.curvature(v))(prior, x))
    h = 1e-6
    for index in [(0, 0, 0), (0, 1, 0), (2, 2, 1), (4, 3, 2), (1, 0, 2)]:
        e = jnp.zeros_like(x).at[index].set(h)
        fd = (float(energy(prior, x + e)) - float(energy(prior, x - e))) / (2 * h)
        assert grad[index] == pytest.approx(fd, rel=1e-6, abs=1e-8), index
        if name != "function" and x[index] > 0:  # the Hessian diagonal (away from the kink of |a - b| at 0)
            fd2 = float(gradient(prior, x + e)[index] - gradient(prior, x - e)[index]) / (2 * h)
            assert curvature[index] == pytest.approx(fd2, rel=1e-5, abs=1e-6), index
    if name != "function":  # the analytic gradient equals autodiff of the energy everywhere
        np.testing.assert_allclose(grad, eqx.filter_jit(lambda p, v: jax.grad(p)(v))(prior, x), rtol=1e-10, atol=1e-12)
    else:
        assert np.all(curvature == 0)


def test_label_weights_do_not_smooth_across_boundaries():
    labels = jnp.zeros((6, 6, 3), jnp.int32).at[3:].set(1)
    image = jnp.where(labels == 1, 5.0, 1.0)
    plain = js.QuadraticPrior()
    anatomical = js.QuadraticPrior(weights=jax.jit(js.anatomical_weights)(labels))
    energy_and_gradient = eqx.filter_jit(lambda p, x: (p(x), p.gradient(x)))
    u, du = energy_and_gradient(anatomical, image)
    assert float(jnp.max(jnp.abs(du))) == 0.0 and float(u) == 0.0
    assert float(jnp.max(jnp.abs(energy_and_gradient(plain, image)[1]))) > 1.0


def test_prior_bad_inputs():
    with pytest.raises(ValueError, match="epsilon"):
        js.RelativeDifferencePrior(epsilon=0.0)
    with pytest.raises(ValueError, match="gamma"):
        js.RelativeDifferencePrior(gamma=-1.0)
    with pytest.raises(ValueError, match="voxel_size"):
        js.QuadraticPrior((1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="weights have shape"):
        js.QuadraticPrior(weights=jnp.ones((13, 2, 2, 2)))(jnp.ones((3, 3, 3)))
    with pytest.raises(TypeError, match="label image"):
        js.anatomical_weights(jnp.ones((3, 3, 3)))
    with pytest.raises(ValueError, match="scalar"):
        js.FunctionPrior(lambda x: x)(jnp.ones((3, 3, 3)))
    with pytest.raises(TypeError, match="callable"):
        js.FunctionPrior(3.0)


# --- OSL-EM and BSREM ---------------------------------------------------------------------------


def noisy_problem(rng, dtype=np.float32, nview=12):
    a, truth, mean = problem(rng, dtype, nview=nview, background=2.0)
    return a, truth, jnp.asarray(rng.poisson(np.asarray(mean)), dtype)


def test_beta_zero_is_osem_and_mlem(rng):
    a, truth, y = noisy_problem(rng)
    x0 = jnp.ones(SHAPE, jnp.float32)
    reference = js.osem(a, y, x0, n_iter=3, n_subsets=5, background=2.0).image  # 5 subsets of 12 views: uneven
    osl = js.osl_em(a, y, x0, prior=js.RelativeDifferencePrior(), beta=0.0, n_iter=3, n_subsets=5, background=2.0)
    np.testing.assert_array_equal(osl.image, reference)


def penalised_objective(a_matrix, y, r, prior, beta_s):
    """-Phi(x) and its gradient for scipy, from the dense system matrix (float64)."""

    energy_and_gradient = jax.jit(lambda x: (prior(x), prior.gradient(x)))

    def f(x):
        ybar = a_matrix @ x + r
        u, du = energy_and_gradient(jnp.asarray(x.reshape(SMALL)))
        return np.sum(ybar - y * np.log(ybar)) + beta_s * float(u), a_matrix.T @ (1 - y / ybar) + beta_s * np.asarray(du).ravel()

    return f


SMALL = (8, 8, 6)


def test_bsrem_monotone_and_converges_to_reference(rng, x64):
    prior = js.RelativeDifferencePrior(gamma=2.0, epsilon=1e-3)
    geometry, mumap = small_problem(rng, nx=8, nz=6, nview=8, dtype=np.float64, mu_scale=0.02)
    a = js.SPECTProjector(geometry, jnp.asarray(mumap))
    truth = 20 * (1 + ellipsoid(SMALL, geometry.voxel_size, (3.0, -2.0, 0.0), (12.0, 9.0, 9.0)))
    y = jnp.asarray(rng.poisson(np.asarray(a(jnp.asarray(truth)) + 1.0)), jnp.float64)
    beta = 0.01
    x0 = jnp.ones(SMALL, jnp.float64) * 20
    # non-subset BSREM: the penalised log-likelihood never decreases
    run = js.bsrem(a, y, x0, prior=prior, beta=beta, n_iter=30, n_subsets=1, background=1.0, history=True)
    objective = np.asarray(run.objective)
    assert np.all(np.diff(objective) > -1e-9 * np.abs(objective[:-1]))
    assert objective[-1] > objective[0] + 10
    # beta = 0, unrelaxed (same compiled program): ML-EM
    ml = js.bsrem(a, y, x0, prior=prior, beta=0.0, relaxation=1.0, decay=0.0, n_iter=30, n_subsets=1, background=1.0,
                  history=True)
    np.testing.assert_allclose(ml.image, js.mlem(a, y, x0, n_iter=30, background=1.0).image, rtol=1e-9, atol=1e-9)
    # reference: L-BFGS-B on the dense float64 problem, run to tight tolerance
    matrix = np.asarray(a.as_matrix())
    s = float(jnp.mean(a.back(jnp.ones_like(y))))
    f = penalised_objective(matrix, np.asarray(y).ravel(), 1.0, prior, beta * s)
    ref = scipy.optimize.minimize(f, np.asarray(run.image).ravel(), jac=True, method="L-BFGS-B",
                                  bounds=[(0, None)] * matrix.shape[1],
                                  options=dict(maxiter=20000, ftol=1e-16, gtol=1e-10, maxcor=30))
    ref_image = ref.x.reshape(SMALL)
    # BSREM with 4 subsets (relaxed) reaches the same maximiser
    out = js.bsrem(a, y, x0, prior=prior, beta=beta, n_iter=300, n_subsets=4, background=1.0, decay=0.05).image
    error = float(jnp.linalg.norm(out - ref_image) / np.linalg.norm(ref_image))
    assert ref.fun <= f(np.asarray(out).ravel())[0]  # the reference is at least as good
    assert error < 2e-3, error


def test_rdp_preserves_edges_better_than_quadratic_at_matched_noise(rng):
    """Step phantom (10 | 100): at equal noise (std over 6 realisations) in the hot flat region,
    BSREM-RDP keeps a sharper step across the edge than BSREM with the quadratic prior."""
    shape, vs, nview = (16, 16, 2), (4.0, 4.0, 4.0), 12
    geometry = js.SPECTGeometry(shape, vs, random_symmetric_psf(rng, 3, 1, shape[1], nview), nview=nview)
    a = js.SPECTProjector(geometry, None)
    step = np.where(np.arange(shape[0])[:, None, None] >= 8, 100.0, 10.0) * np.ones(shape)
    y = jax.random.poisson(jax.random.key(0), a(jnp.asarray(step, jnp.float32)) + 1.0, (6, *a.out_shape))
    y = y.astype(jnp.float32)
    x0 = jnp.full(shape, 50.0, jnp.float32)
    flat = np.zeros(shape, bool)
    flat[11:14, 4:12] = True  # hot, three voxels or more from the edge

    @eqx.filter_jit
    def realisations(prior, beta):
        one = lambda yi: js.bsrem(a, yi, x0, prior=prior, beta=beta, n_iter=12, n_subsets=4, background=1.0).image
        return jax.vmap(one)(y)

    def noise_and_edge(prior, beta):
        images = np.asarray(realisations(prior, jnp.asarray(beta, jnp.float32)))
        noise = np.mean(np.std(images, axis=0)[flat]) / np.mean(images[:, flat])
        mean = images.mean(axis=0)
        edge = (np.mean(mean[9, 4:12]) - np.mean(mean[6, 4:12])) / 90  # 1 for a perfect step
        return noise, edge

    rdp_noise, rdp_edge = noise_and_edge(js.RelativeDifferencePrior(gamma=10.0, epsilon=1e-3), 0.1)
    quadratic = js.QuadraticPrior()
    low, high = 1e-5, 1e-1  # bisect the quadratic's beta (log scale) to the RDP's noise
    for _ in range(10):
        beta = np.sqrt(low * high)
        noise, edge = noise_and_edge(quadratic, beta)
        low, high = (beta, high) if noise > rdp_noise else (low, beta)
    assert noise == pytest.approx(rdp_noise, rel=0.05)
    assert rdp_noise < 0.5 * noise_and_edge(quadratic, 0.0)[0]  # real smoothing, not a no-op
    assert rdp_edge > edge + 0.08, (rdp_edge, edge, rdp_noise, noise)


def test_history_vmap_and_bad_inputs(rng):
    a, truth, y = noisy_problem(rng)
    x0 = jnp.ones(SHAPE, jnp.float32)
    prior = js.RelativeDifferencePrior()
    ys = jnp.stack([y, y[..., ::-1]])  # two "patients"
    one = lambda yi: js.osl_em(a, yi, x0, prior=prior, beta=0.05, n_iter=3, n_subsets=3, background=2.0, history=True,
                               reference=truth)
    runs = jax.vmap(one)(ys)
    assert runs.objective.shape == runs.log_likelihood.shape == runs.nrmse.shape == (2, 4)
    s = jnp.mean(a.back(jnp.ones_like(y)))
    for yi, image, objective in zip(ys, runs.image, runs.objective):  # each patient's history is its own
        expected = js.recon.poisson_log_likelihood(yi, a(image) + 2.0) - 0.05 * s * prior(image)
        assert float(objective[-1]) == pytest.approx(float(expected), rel=1e-5)
    assert not np.allclose(runs.image[0], runs.image[1])
    with pytest.raises(ValueError, match="beta"):
        js.osl_em(a, y, x0, prior=prior, beta=-1.0, n_iter=1, n_subsets=1)
    with pytest.raises(ValueError, match="relaxation"):
        js.bsrem(a, y, x0, prior=prior, beta=1.0, relaxation=2.0, n_iter=1, n_subsets=1)
    with pytest.raises(TypeError, match="prior"):
        js.bsrem(a, y, x0, prior=lambda x: x, beta=1.0, n_iter=1, n_subsets=1)
    with pytest.raises(ValueError, match="n_subsets"):
        js.bsrem(a, y, x0, prior=prior, beta=1.0, n_iter=1, n_subsets=13)


# --- post-filter --------------------------------------------------------------------------------


def test_gaussian_filter_matches_scipy_convolution(rng, x64):
    image = rng.random((9, 8, 7))
    fwhm, vs = (6.0, 0.0, 9.0), (2.0, 3.0, 4.0)
    out = np.asarray(jax.jit(js.gaussian_filter, static_argnums=(1, 2))(jnp.asarray(image), fwhm, vs))
    expected = image
    for axis, (f, d) in enumerate(zip(fwhm, vs)):
        if f == 0:
            continue
        sigma = f / np.sqrt(8 * np.log(2))
        h = int(np.ceil(3 * sigma / d))
        edges = (np.arange(-h, h + 2) - 0.5) * d
        taps = np.diff(0.5 * scipy.special.erf(edges / (np.sqrt(2) * sigma)))
        expected = scipy.ndimage.convolve1d(expected, taps / taps.sum(), axis=axis, mode="nearest")
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(js.gaussian_filter(jnp.full((5, 5, 2), 3.0), 10.0, (2.0, 2.0, 2.0)), 3.0, rtol=1e-12)
    with pytest.raises(ValueError, match="fwhm_mm"):
        js.gaussian_filter(jnp.ones((3, 3, 3)), -1.0, (1.0, 1.0, 1.0))


# --- command line -------------------------------------------------------------------------------


def test_cli_regularised_reconstruction_and_postfilter(tmp_path, capsys):
    pytest.importorskip("nibabel")
    from jaxspect._cli import main
    from jaxspect.io import read_interfile, read_nifti

    sim = str(tmp_path / "sim.h00")
    assert main(["simulate", "--output", sim, "--size", "16", "--slices", "8", "--views", "8", "--counts", "1e5"]) == 0
    mumap = str(tmp_path / "sim_mumap.nii.gz")
    base = ["reconstruct", sim, "--mumap", mumap, "--iterations", "2", "--subsets", "2", "--no-progress"]
    out = tmp_path / "bsrem.nii"
    assert main([*base, "--algorithm", "bsrem", "--prior", "rdp", "--beta", "0.2", "--gamma", "3",
                 "--postfilter", "40", "--output", str(out)]) == 0
    image, voxel = read_nifti(out)
    data = read_interfile(sim)
    projector = js.SPECTProjector(data.spect_geometry(js.GaussianPSF(2.5, 0.1)), jnp.asarray(read_nifti(mumap)[0]))
    expected = js.bsrem(projector, jnp.asarray(data.counts), jnp.ones(image.shape), beta=0.2, n_iter=2, n_subsets=2,
                        prior=js.RelativeDifferencePrior(gamma=3.0, voxel_size=voxel)).image
    expected = js.gaussian_filter(expected, 40.0, voxel)
    np.testing.assert_allclose(image, expected, rtol=1e-4, atol=1e-4 * float(np.max(expected)))

    def fails(argv, needle):
        with pytest.raises(SystemExit) as e:
            main([*base, "--output", str(out), *argv])
        assert e.value.code == 2 and needle in capsys.readouterr().err

    fails(["--algorithm", "osl"], "--algorithm osl needs --beta")
    fails(["--beta", "0.1"], "--beta applies to --algorithm osl or bsrem")
    fails(["--algorithm", "bsrem", "--beta", "-1"], "--beta must be")
    fails(["--postfilter", "a,b"], "--postfilter must be")
