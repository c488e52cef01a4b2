"""jaxspect: SPECT image reconstruction in JAX.

Array layout and units (see ``jaxspect._geometry`` and the README): image ``(nx, ny, nz)``,
views ``(nx, nz, nview)``, attenuation maps in 1/mm, lengths in mm, angles in radians.
"""

from ._attenuation import attenuation_factors as attenuation_factors
from ._collimators import (
    COLLIMATORS as COLLIMATORS,
    Collimator as Collimator,
    get_collimator as get_collimator,
)
from ._geometry import SPECTGeometry as SPECTGeometry, per_cm_to_per_mm as per_cm_to_per_mm
from ._operator import (
    AbstractProjector as AbstractProjector,
    MatrixProjector as MatrixProjector,
    TransposedProjector as TransposedProjector,
)
from ._projector import (
    SPECTProjector as SPECTProjector,
    back_project as back_project,
    forward_project as forward_project,
)
from ._psf import (
    AbstractPSF as AbstractPSF,
    ExplicitPSF as ExplicitPSF,
    GaussianPSF as GaussianPSF,
    gaussian_psf_array as gaussian_psf_array,
)
from ._beds import stitch_beds as stitch_beds
from ._quantification import (
    activity_concentration as activity_concentration,
    decay_factor as decay_factor,
    sensitivity_from_point_source as sensitivity_from_point_source,
    sensitivity_from_reconstruction as sensitivity_from_reconstruction,
)
from ._serialization import load_model as load_model, save_model as save_model
from ._rotate import rotate as rotate, rotate_adjoint as rotate_adjoint
from ._simulate import SimulatedData as SimulatedData, simulate as simulate
from . import io as io, metrics as metrics, nn as nn, phantoms as phantoms, recon as recon, spectnet as spectnet
from . import training as training
from ._filter import gaussian_filter as gaussian_filter
from .recon import (
    AbstractPrior as AbstractPrior,
    EMResult as EMResult,
    FunctionPrior as FunctionPrior,
    QuadraticPrior as QuadraticPrior,
    RelativeDifferencePrior as RelativeDifferencePrior,
    anatomical_weights as anatomical_weights,
    bsrem as bsrem,
    mlem as mlem,
    osem as osem,
    osl_em as osl_em,
)

__version__ = "0.1.0"
