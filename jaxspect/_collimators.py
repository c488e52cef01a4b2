"""Parallel-hole collimators by name: hole geometry, system resolution and the Gaussian PSF.

The table
---------
:data:`COLLIMATORS` holds parallel-hole collimators under SIMIND's codes (``"sy-lehr"``,
``"si-me"``, ``"gi-megp"``, ...; case-insensitive), with readable aliases
(``"siemens-lehr"``, ``"ge-megp"``, ``"philips-hegp"``, ...; :data:`COLLIMATOR_ALIASES`). Hole
diameter (flat-to-flat for hexagonal holes), septal thickness and hole length are those of
SIMIND's collimator database ``collim.col`` (M. Ljungberg, SIMIND Monte Carlo program, Lund
University; the same file PyTomography ships), which the vendors' data sheets agree with where
we checked (Siemens Symbia LEHR 1.11 / 0.16 / 24.05 mm, GE Infinia/Discovery LEHR 1.5 / 0.2 /
35 mm).

System resolution
-----------------
Geometric resolution of a parallel-hole collimator (Cherry, Sorenson & Phelps, *Physics in
Nuclear Medicine*, 4th ed., section 14.C.3, eqs. 14-6 and 14-7 with the image-plane term of
Sorenson & Phelps, 2nd ed., ch. 16):

    R_geo(d) = D (L_eff + d + c) / L_eff,      L_eff = L - 2 / mu_Pb(E)

``D`` hole diameter, ``L`` hole length, ``d`` source-to-collimator-face distance, ``c`` the
distance from the collimator's back face to the mean depth of interaction in the crystal (half
of a 9.5 mm NaI(Tl) crystal, :data:`IMAGE_PLANE_MM`), ``mu_Pb(E)`` lead's linear attenuation
coefficient at the photon energy (NIST, :func:`jaxspect._attenuation_coefficients.lead_attenuation`):
the effective length accounts for septal penetration near the hole ends. The system resolution
adds the camera's intrinsic resolution in quadrature,

    R_sys(d) = sqrt(R_int(E)^2 + R_geo(d)^2),  R_int(E) = R_int(140 keV) sqrt(140 / E)

(intrinsic resolution scales with the inverse square root of the number of scintillation
photons, i.e. of the energy; Cherry et al. section 13.B.4). :data:`INTRINSIC_FWHM_MM` is
3.8 mm at 140 keV (Siemens Symbia data sheet, UFOV, 9.5 mm crystal).

Checked against vendors' published system resolution at 10 cm (FWHM, no scatter; model with
the defaults above in brackets; the test allows 12 %). The figures are as the data sheets are
commonly quoted; no copy of the data sheets was available to re-read when this was written, so
treat them as to be confirmed against your scanner's own: Siemens Symbia data sheet LEHR 7.5 mm
(7.2), LEAP 8.3 mm (8.8), ME 12.5 mm with Ga-67 (11.3 at 184.6 keV), HE 13.4 mm with I-131
(12.1 at 364.5 keV); GE Infinia/Discovery 670 data sheet LEHR 7.4 mm (7.2). The formula
neglects septal penetration beyond ``L_eff`` and the hexagonal hole shape, which is why it
is low for the medium- and high-energy collimators.

The Gaussian PSF
----------------
:class:`jaxspect.GaussianPSF` models ``FWHM(d) = sqrt(fwhm0^2 + (slope d)^2)``; ``R_sys(d)^2``
is a quadratic in ``d`` with a linear term, so :meth:`Collimator.psf` fits ``fwhm0^2`` and
``slope^2`` by least squares in relative FWHM^2 over the distances the image occupies
(``distance_range_mm``; :func:`psf_distance_range` gives it for a geometry). The fit is
within 2 % of ``R_sys`` over 100-300 mm and within 6 % (LEHR) to 10 % (ME) over 25-300 mm,
the largest error nearest the collimator.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ._attenuation_coefficients import lead_attenuation
from ._psf import GaussianPSF

__all__ = [
    "Collimator",
    "COLLIMATORS",
    "COLLIMATOR_ALIASES",
    "INTRINSIC_FWHM_MM",
    "IMAGE_PLANE_MM",
    "get_collimator",
    "collimator_from_file",
    "psf_distance_range",
    "format_collimator_table",
]

#: Intrinsic resolution (FWHM, mm) at 140 keV of a 9.5 mm NaI(Tl) camera (Siemens Symbia data sheet).
INTRINSIC_FWHM_MM = 3.8
#: Collimator back face to mean depth of interaction (mm): half of a 9.5 mm (3/8") crystal.
IMAGE_PLANE_MM = 4.75
_REFERENCE_KEV = 140.0


@dataclasses.dataclass(frozen=True)
class Collimator:
    """A parallel-hole lead collimator.

    Attributes:
        name: SIMIND code, lower case (``"sy-lehr"``).
        description: vendor, camera and type.
        hole_diameter_mm: ``D`` (flat-to-flat for hexagonal holes), mm.
        septal_thickness_mm: lead between holes, mm.
        hole_length_mm: ``L``, mm.
        hole_shape: ``"hexagonal"``, ``"round"`` or ``"square"``.
    """

    name: str
    description: str
    hole_diameter_mm: float
    septal_thickness_mm: float
    hole_length_mm: float
    hole_shape: str = "hexagonal"

    def effective_length_mm(self, energy_kev: float) -> float:
        """``L_eff = L - 2 / mu_Pb(E)`` (mm), the penetration-corrected hole length."""
        mu = lead_attenuation(energy_kev)
        length = self.hole_length_mm - 2.0 / mu
        if length <= 0:
            raise ValueError(f"collimator {self.name!r} ({self.hole_length_mm} mm holes) is transparent at "
                             f"{energy_kev} keV (2 / mu_Pb = {2 / mu:.1f} mm); choose a collimator for this energy")
        return length

    def geometric_fwhm_mm(self, distance_mm, energy_kev: float, *, image_plane_mm: float = IMAGE_PLANE_MM):
        """Geometric resolution ``D (L_eff + d + c) / L_eff`` (mm) at ``distance_mm`` (array) from the face."""
        length = self.effective_length_mm(energy_kev)
        d = np.asarray(distance_mm, np.float64)
        return self.hole_diameter_mm * (length + d + image_plane_mm) / length

    def system_fwhm_mm(self, distance_mm, energy_kev: float, *, intrinsic_fwhm_mm: float | None = None,
                       image_plane_mm: float = IMAGE_PLANE_MM):
        """System resolution ``sqrt(R_int(E)^2 + R_geo(d)^2)`` (mm) at ``distance_mm``.

        ``intrinsic_fwhm_mm``: the camera's intrinsic FWHM *at this energy* (mm); default
        :data:`INTRINSIC_FWHM_MM` scaled by ``sqrt(140 / E)``.
        """
        intrinsic = _intrinsic(energy_kev, intrinsic_fwhm_mm)
        geometric = self.geometric_fwhm_mm(distance_mm, energy_kev, image_plane_mm=image_plane_mm)
        return np.sqrt(intrinsic**2 + geometric**2)

    def psf(self, energy_kev: float, *, distance_range_mm=(25.0, 300.0), intrinsic_fwhm_mm: float | None = None,
            image_plane_mm: float = IMAGE_PLANE_MM) -> GaussianPSF:
        """``GaussianPSF(fwhm0, slope)`` fitted (least squares in relative FWHM^2) to
        :meth:`system_fwhm_mm` over ``distance_range_mm`` (mm from the collimator face)."""
        lo, hi = (float(v) for v in distance_range_mm)
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo < hi):
            raise ValueError(f"distance_range_mm must be (lo, hi) with 0 <= lo < hi (mm), got {distance_range_mm!r}")
        d = np.linspace(lo, hi, 201)
        target = self.system_fwhm_mm(d, energy_kev, intrinsic_fwhm_mm=intrinsic_fwhm_mm,
                                     image_plane_mm=image_plane_mm) ** 2
        design = np.stack([np.ones_like(d), d**2], axis=1) / target[:, None]  # relative errors
        (c0, c1), *_ = np.linalg.lstsq(design, np.ones_like(d), rcond=None)
        return GaussianPSF(math.sqrt(max(c0, 0.0)), math.sqrt(max(c1, 0.0)))


def _intrinsic(energy_kev, intrinsic_fwhm_mm):
    e = float(energy_kev)
    if not (math.isfinite(e) and e > 0):
        raise ValueError(f"energy_kev must be a positive photon energy (keV), got {energy_kev!r}")
    if intrinsic_fwhm_mm is None:
        return INTRINSIC_FWHM_MM * math.sqrt(_REFERENCE_KEV / e)
    value = float(intrinsic_fwhm_mm)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"intrinsic_fwhm_mm must be >= 0 (mm), got {intrinsic_fwhm_mm!r}")
    return value


def _c(name, description, diameter_cm, septa_cm, length_cm, shape="hexagonal"):
    # collim.col gives cm
    return Collimator(name, description, round(diameter_cm * 10, 6), round(septa_cm * 10, 6),
                      round(length_cm * 10, 6), shape)


#: Parallel-hole collimators by SIMIND code (lower case). Values from SIMIND's ``collim.col``.
COLLIMATORS: dict[str, Collimator] = {c.name: c for c in (
    _c("sy-lehr", "Siemens Symbia LEHR (low energy high resolution)", 0.111, 0.016, 2.405),
    _c("sy-leap", "Siemens Symbia LEAP (low energy all purpose)", 0.145, 0.020, 2.405),
    _c("sy-me", "Siemens Symbia ME (medium energy low penetration, MELP)", 0.294, 0.114, 4.064),
    _c("sy-he", "Siemens Symbia HE (high energy)", 0.400, 0.200, 5.970),
    _c("se-lehr", "Siemens E.CAM LEHR", 0.111, 0.016, 2.405),
    _c("se-leap", "Siemens E.CAM LEAP", 0.145, 0.020, 2.410),
    _c("se-leur", "Siemens E.CAM LEUHR (ultra-high resolution)", 0.116, 0.013, 3.580),
    _c("se-me", "Siemens E.CAM ME", 0.294, 0.114, 4.064),
    _c("se-he", "Siemens E.CAM HE", 0.340, 0.200, 5.080),
    _c("si-lehr", "Siemens LEHR (SIMIND's generic Siemens)", 0.111, 0.016, 2.360),
    _c("si-leap", "Siemens LEAP (SIMIND's generic Siemens)", 0.145, 0.020, 2.410),
    _c("si-me", "Siemens ME (SIMIND's generic Siemens)", 0.294, 0.114, 4.060),
    _c("si-he", "Siemens HE (SIMIND's generic Siemens)", 0.406, 0.200, 5.970),
    _c("gi-lehr", "GE Infinia / Discovery NM LEHR", 0.150, 0.020, 3.500),
    _c("gi-legp", "GE Infinia / Discovery NM LEGP (low energy general purpose)", 0.190, 0.020, 3.500),
    _c("gi-eleg", "GE Infinia / Discovery NM extended LEGP", 0.250, 0.040, 4.000),
    _c("gi-megp", "GE Infinia / Discovery NM MEGP (medium energy general purpose)", 0.300, 0.105, 5.800),
    _c("gi-hegp", "GE Infinia / Discovery NM HEGP (high energy general purpose)", 0.400, 0.180, 6.600),
    _c("g8-lehr", "GE Discovery 870 DR LEHR", 0.150, 0.020, 3.500),
    _c("g8-megp", "GE Discovery 870 DR MEGP", 0.350, 0.105, 5.800),
    _c("g8-hegp", "GE Discovery 870 DR HEGP", 0.400, 0.180, 6.600),
    _c("pb-lehr", "Philips BrightView LEHR", 0.122, 0.0152, 2.700),
    _c("pb-legp", "Philips BrightView LEGP", 0.140, 0.018, 2.470),
    _c("pb-megp", "Philips BrightView MEGP", 0.340, 0.086, 5.840),
    _c("pb-hegp", "Philips BrightView HEGP", 0.381, 0.173, 5.840),
    _c("ma-lehr", "Mediso AnyScan LEHR", 0.150, 0.020, 3.500),
    _c("ma-legp", "Mediso AnyScan LEGP", 0.190, 0.020, 3.500),
    _c("ma-megp", "Mediso AnyScan MEGP", 0.250, 0.120, 3.500),
    _c("ma-hegp", "Mediso AnyScan HEGP", 0.340, 0.160, 5.500),
)}

#: Readable names -> SIMIND codes (vendor-type; MELP/MEGP and LEAP/LEGP spellings).
COLLIMATOR_ALIASES: dict[str, str] = {
    "siemens-lehr": "sy-lehr", "siemens-leap": "sy-leap", "siemens-legp": "sy-leap",
    "siemens-me": "sy-me", "siemens-melp": "sy-me", "siemens-megp": "sy-me",
    "siemens-he": "sy-he", "siemens-hegp": "sy-he",
    "ge-lehr": "gi-lehr", "ge-legp": "gi-legp", "ge-leap": "gi-legp", "ge-megp": "gi-megp", "ge-me": "gi-megp",
    "ge-hegp": "gi-hegp", "ge-he": "gi-hegp",
    "philips-lehr": "pb-lehr", "philips-legp": "pb-legp", "philips-leap": "pb-legp", "philips-megp": "pb-megp",
    "philips-me": "pb-megp", "philips-hegp": "pb-hegp", "philips-he": "pb-hegp",
    "mediso-lehr": "ma-lehr", "mediso-legp": "ma-legp", "mediso-megp": "ma-megp", "mediso-hegp": "ma-hegp",
}


def get_collimator(name: str) -> Collimator:
    """The collimator called ``name``: a SIMIND code or an alias, case-insensitive."""
    key = str(name).strip().lower()
    key = COLLIMATOR_ALIASES.get(key, key)
    if key not in COLLIMATORS:
        raise ValueError(f"unknown collimator {name!r}; known: {', '.join(sorted(COLLIMATORS))} "
                         f"(aliases: {', '.join(sorted(COLLIMATOR_ALIASES))})")
    return COLLIMATORS[key]


_VENDORS = {"siemens": "siemens", "ge": "ge", "general electric": "ge", "philips": "philips", "mediso": "mediso"}


def collimator_from_file(name: str, manufacturer: str | None = None) -> Collimator | None:
    """The collimator a file names: Collimator/Grid Name (0018,1180) as a table name or alias
    (``"sy-lehr"``, ``"siemens-me"``), or a vendor's short name (``"LEHR"``, ``"MEGP"``) with the
    file's Manufacturer (0008,0070); ``None`` when it does not resolve to one entry."""
    key = str(name).strip().lower().replace(" ", "")
    try:
        return get_collimator(key)
    except ValueError:
        pass
    maker = str(manufacturer or "").strip().lower()
    vendor = next((v for k, v in _VENDORS.items() if maker.startswith(k) or f" {k}" in f" {maker}"), None)
    if vendor is None:
        return None
    try:
        return get_collimator(f"{vendor}-{key}")
    except ValueError:
        return None


def psf_distance_range(radii_mm, image_shape, voxel_size_mm) -> tuple[float, float]:
    """Distances (mm) from the collimator face that the image grid occupies over the orbit:
    ``(max(0, min r - h), max r + h)`` with ``h`` the half-diagonal of a transaxial slice."""
    radii = np.asarray(radii_mm, np.float64)
    half = 0.5 * math.hypot(image_shape[0] * voxel_size_mm[0], image_shape[1] * voxel_size_mm[1])
    return max(0.0, float(radii.min()) - half), float(radii.max()) + half


def format_collimator_table(energy_kev: float | None = None) -> str:
    """A text table of :data:`COLLIMATORS` (and their system FWHM at 10 cm at ``energy_kev``)."""
    header = f"{'name':9s} {'hole mm':>7s} {'septa mm':>8s} {'length mm':>9s}"
    if energy_kev is not None:
        header += f" {'FWHM@10cm':>9s}"
    lines = [header + "  description"]
    for c in COLLIMATORS.values():
        line = f"{c.name:9s} {c.hole_diameter_mm:7.3g} {c.septal_thickness_mm:8.3g} {c.hole_length_mm:9.4g}"
        if energy_kev is not None:
            try:
                line += f" {float(c.system_fwhm_mm(100.0, energy_kev)):9.1f}"
            except ValueError:
                line += f" {'-':>9s}"
        lines.append(line + "  " + c.description)
    aliases = ", ".join(f"{a} = {c}" for a, c in COLLIMATOR_ALIASES.items())
    lines.append(f"aliases: {aliases}")
    return "\n".join(lines)
