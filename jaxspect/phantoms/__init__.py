"""Phantoms made in code (nothing is downloaded): analytic shapes on the image grid, an XCAT-like
torso with liver lesions and its attenuation map, a hot-rod (Derenzo) phantom, Shepp-Logan
phantoms, and NIST attenuation coefficients of body materials."""

from .._attenuation_coefficients import (
    ATTENUATION_ENERGIES_KEV as ATTENUATION_ENERGIES_KEV,
    I123_KEV as I123_KEV,
    LU177_KEV as LU177_KEV,
    LU177_LOW_KEV as LU177_LOW_KEV,
    MASS_ATTENUATION_CM2_PER_G as MASS_ATTENUATION_CM2_PER_G,
    MATERIAL_DENSITIES_G_PER_CM3 as MATERIAL_DENSITIES_G_PER_CM3,
    PHOTON_ENERGIES_KEV as PHOTON_ENERGIES_KEV,
    TC99M_KEV as TC99M_KEV,
    attenuation_coefficients as attenuation_coefficients,
    linear_attenuation as linear_attenuation,
)
from ._hot_rod import HotRodPhantom as HotRodPhantom, hot_rod_phantom as hot_rod_phantom
from ._shapes import ellipsoid as ellipsoid, elliptic_cylinder as elliptic_cylinder, voxel_centres as voxel_centres
from ._shepp_logan import (
    SHEPP_LOGAN_2D_ELLIPSES as SHEPP_LOGAN_2D_ELLIPSES,
    SHEPP_LOGAN_3D_ELLIPSOIDS as SHEPP_LOGAN_3D_ELLIPSOIDS,
    shepp_logan_2d as shepp_logan_2d,
    shepp_logan_3d as shepp_logan_3d,
)
from ._torso import (
    TORSO_ACTIVITY_DEFAULTS as TORSO_ACTIVITY_DEFAULTS,
    TORSO_ORGANS as TORSO_ORGANS,
    TorsoPhantom as TorsoPhantom,
    torso_phantom as torso_phantom,
)
from ._brain import (
    BrainPhantom2D as BrainPhantom2D,
    brain_phantom_2d as brain_phantom_2d,
    brain_phantoms_2d as brain_phantoms_2d,
    phantom_keys as phantom_keys,
)
