"""Linear attenuation coefficients at SPECT photon energies (1/mm): body materials (for
phantoms and CT-based attenuation maps) and lead (for collimator septal penetration).

Source of the numbers
---------------------
Total mass attenuation coefficients ``mu/rho`` (cm^2/g, *with* coherent scattering) from
J. H. Hubbell and S. M. Seltzer, "Tables of X-Ray Mass Attenuation Coefficients and Mass
Energy-Absorption Coefficients from 1 keV to 20 MeV for Elements Z = 1 to 92 and 48 Additional
Substances of Dosimetric Interest", NISTIR 5632 (1995), NIST Standard Reference Database 126
(Table 4, compounds and mixtures; the same values XCOM gives for "total attenuation with
coherent scattering"). Tissue compositions are those of ICRU Report 44 (1989).

``mu/rho`` in cm^2/g at the tabulated energies (keV):

============  =======  =======  =======  =======  =======  =======  =======  =======  =======
material      50       60       80       100      150      200      300      400      500
============  =======  =======  =======  =======  =======  =======  =======  =======  =======
water         0.2269   0.2059   0.1837   0.1707   0.1505   0.1370   0.1186   0.1061   0.09687
soft tissue   0.2264   0.2048   0.1823   0.1693   0.1492   0.1358   0.1175   0.1052   0.09598
lung tissue   0.2270   0.2053   0.1826   0.1695   0.1493   0.1359   0.1177   0.1053   0.09607
cortical bone 0.4242   0.3148   0.2229   0.1855   0.1480   0.1309   0.1113   0.09908  0.09022
============  =======  =======  =======  =======  =======  =======  =======  =======  =======

(water = "Water, Liquid"; soft tissue = "Tissue, Soft (ICRU-44)"; lung tissue = "Lung Tissue
(ICRU-44)"; cortical bone = "Bone, Cortical (ICRU-44)".) There is no absorption edge of these
materials between 50 and 500 keV, so between two tabulated energies ``log(mu/rho)`` is
interpolated linearly in ``log(E)`` (log-log interpolation, as NIST recommends); energies
outside [50, 500] keV are refused rather than extrapolated.

Densities (g/cm^3) used to turn ``mu/rho`` into the linear coefficient
``mu = (mu/rho) * rho`` (1/cm, divided by 10 for 1/mm):

- ``"water"``: 1.00 (water-equivalent soft tissue, the usual SPECT attenuation-map convention);
- ``"soft_tissue"``: 1.06, ICRU-44 soft tissue (the material the torso phantom uses for the body
  and its abdominal organs);
- ``"lung"``: 0.26, ICRU-44 lung *tissue* composition at the density of inflated lung (ICRU-44
  lists 1.05 for the tissue itself; aerated lung in CT-based maps is about 0.26-0.30);
- ``"bone"``: 1.92, ICRU-44 cortical bone.

Lead (collimators, :func:`lead_attenuation`): NIST ``mu/rho`` of Pb (Z = 82; Hubbell & Seltzer,
NISTIR 5632, Table 3, elements), density 11.35 g/cm^3. Lead's K edge at 88.0045 keV is tabulated
on both sides (1.910 just below, 7.683 cm^2/g just above); log-log interpolation is done within
one side of the edge only:

=====  =====  =====  ======  ======  =====  =====  ======  ======  ======  ======  ======
50     60     80     88.0-   88.0+   100    150    200     300     400     500     600
8.041  5.021  2.419  1.910   7.683   5.549  2.014  0.9985  0.4031  0.2323  0.1614  0.1248
=====  =====  =====  ======  ======  =====  =====  ======  ======  ======  ======  ======

(2.69 /mm at 140.5 keV, 1.03 /mm at 208.4 keV, 0.315 /mm at 364.5 keV.)

For example water is 0.01538 /mm at 140 keV and 0.01536 /mm at 140.5 keV (Tc-99m; the familiar
0.15 /cm); at 208.4 keV (Lu-177) water is 0.01350 /mm, soft tissue 0.01418 /mm, lung
0.00348 /mm and cortical bone 0.02472 /mm.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "ATTENUATION_ENERGIES_KEV",
    "MASS_ATTENUATION_CM2_PER_G",
    "MATERIAL_DENSITIES_G_PER_CM3",
    "PHOTON_ENERGIES_KEV",
    "TC99M_KEV",
    "LU177_KEV",
    "LU177_LOW_KEV",
    "I123_KEV",
    "linear_attenuation",
    "attenuation_coefficients",
    "lead_attenuation",
]

#: Tabulated photon energies (keV) of :data:`MASS_ATTENUATION_CM2_PER_G`.
ATTENUATION_ENERGIES_KEV: tuple[float, ...] = (50.0, 60.0, 80.0, 100.0, 150.0, 200.0, 300.0, 400.0, 500.0)

#: Total mass attenuation coefficients mu/rho (cm^2/g, with coherent scattering) from NIST
#: (Hubbell & Seltzer, NISTIR 5632), one value per energy of :data:`ATTENUATION_ENERGIES_KEV`.
MASS_ATTENUATION_CM2_PER_G: dict[str, tuple[float, ...]] = {
    "water": (0.2269, 0.2059, 0.1837, 0.1707, 0.1505, 0.1370, 0.1186, 0.1061, 0.09687),
    "soft_tissue": (0.2264, 0.2048, 0.1823, 0.1693, 0.1492, 0.1358, 0.1175, 0.1052, 0.09598),
    "lung": (0.2270, 0.2053, 0.1826, 0.1695, 0.1493, 0.1359, 0.1177, 0.1053, 0.09607),
    "bone": (0.4242, 0.3148, 0.2229, 0.1855, 0.1480, 0.1309, 0.1113, 0.09908, 0.09022),
}

#: Mass densities (g/cm^3) that :func:`linear_attenuation` uses by default.
MATERIAL_DENSITIES_G_PER_CM3: dict[str, float] = {
    "water": 1.00,
    "soft_tissue": 1.06,
    "lung": 0.26,
    "bone": 1.92,
}

#: Tc-99m photopeak (keV).
TC99M_KEV = 140.5
#: Lu-177 main imaging photopeak (keV), the 208 keV window of the paper.
LU177_KEV = 208.4
#: Lu-177 lower photopeak (keV), the 113 keV window.
LU177_LOW_KEV = 112.9
#: I-123 photopeak (keV).
I123_KEV = 159.0

#: Named photopeak presets (keV): ``"Tc-99m"``, ``"Lu-177"`` (208 keV), ``"Lu-177-113"``,
#: ``"I-123"``; ``attenuation_coefficients(PHOTON_ENERGIES_KEV["Lu-177"])``.
PHOTON_ENERGIES_KEV: dict[str, float] = {
    "Tc-99m": TC99M_KEV,
    "Lu-177": LU177_KEV,
    "Lu-177-113": LU177_LOW_KEV,
    "I-123": I123_KEV,
}

_LOG_E = np.log(np.asarray(ATTENUATION_ENERGIES_KEV))


def _mass_attenuation(material: str, energy_kev: float) -> float:
    if material not in MASS_ATTENUATION_CM2_PER_G:
        raise ValueError(
            f"unknown material {material!r}; known: {sorted(MASS_ATTENUATION_CM2_PER_G)}"
        )
    e = float(energy_kev)
    lo, hi = ATTENUATION_ENERGIES_KEV[0], ATTENUATION_ENERGIES_KEV[-1]
    if not (math.isfinite(e) and lo <= e <= hi):
        raise ValueError(
            f"energy_kev={energy_kev!r} is outside the tabulated range [{lo:g}, {hi:g}] keV"
        )
    log_mu = np.log(np.asarray(MASS_ATTENUATION_CM2_PER_G[material]))
    return float(np.exp(np.interp(math.log(e), _LOG_E, log_mu)))


def linear_attenuation(material: str, energy_kev: float, *, density: float | None = None) -> float:
    """Linear attenuation coefficient of a material at one photon energy.

    Parameters
    ----------
    material : str
        ``"water"``, ``"soft_tissue"`` (ICRU-44), ``"lung"`` (ICRU-44 lung tissue) or ``"bone"``
        (ICRU-44 cortical bone).
    energy_kev : float
        Photon energy in keV, within the table's [50, 500] keV.
    density : float, optional
        Mass density in g/cm^3; default :data:`MATERIAL_DENSITIES_G_PER_CM3` (water 1.00,
        soft tissue 1.06, inflated lung 0.26, cortical bone 1.92).

    Returns
    -------
    float
        ``mu`` in 1/mm: log-log interpolated NIST ``mu/rho`` (cm^2/g) times the density, / 10.

    Raises
    ------
    ValueError
        For an unknown material, an energy outside [50, 500] keV, or a non-positive density.
    """
    mass = _mass_attenuation(material, energy_kev)
    rho = MATERIAL_DENSITIES_G_PER_CM3[material] if density is None else float(density)
    if not (math.isfinite(rho) and rho > 0):
        raise ValueError(f"density must be a positive number of g/cm^3, got {density!r}")
    return mass * rho / 10.0


def attenuation_coefficients(energy_kev: float) -> dict[str, float]:
    """All materials' linear attenuation coefficients (1/mm) at ``energy_kev`` (keV), at their
    default densities: ``{"water", "soft_tissue", "lung", "bone"} -> mu``."""
    return {m: linear_attenuation(m, energy_kev) for m in MASS_ATTENUATION_CM2_PER_G}


#: Lead (Pb): energies (keV) and mass attenuation (cm^2/g), NIST (see the module docstring),
#: below and above the K edge at 88.0045 keV.
LEAD_BELOW_K_EDGE = ((50.0, 60.0, 80.0, 88.0045), (8.041, 5.021, 2.419, 1.910))
LEAD_ABOVE_K_EDGE = ((88.0045, 100.0, 150.0, 200.0, 300.0, 400.0, 500.0, 600.0),
                     (7.683, 5.549, 2.014, 0.9985, 0.4031, 0.2323, 0.1614, 0.1248))
LEAD_DENSITY_G_PER_CM3 = 11.35


def lead_attenuation(energy_kev: float) -> float:
    """Linear attenuation coefficient of lead (1/mm) at ``energy_kev`` in [50, 600] keV:
    NIST ``mu/rho`` log-log interpolated on one side of the K edge (88.0 keV) times 11.35
    g/cm^3. Just above the edge lead attenuates 4x more than just below it."""
    e = float(energy_kev)
    lo, hi = LEAD_BELOW_K_EDGE[0][0], LEAD_ABOVE_K_EDGE[0][-1]
    if not (math.isfinite(e) and lo <= e <= hi):
        raise ValueError(f"energy_kev={energy_kev!r} is outside lead's tabulated range [{lo:g}, {hi:g}] keV")
    energies, mass = LEAD_BELOW_K_EDGE if e < LEAD_ABOVE_K_EDGE[0][0] else LEAD_ABOVE_K_EDGE
    value = float(np.exp(np.interp(math.log(e), np.log(energies), np.log(mass))))
    return value * LEAD_DENSITY_G_PER_CM3 / 10.0
