"""Statistical and learned reconstruction: ML-EM, OS-EM, MAP (OSL-EM, BSREM) with priors, unrolled
CNN-regularised EM."""

from ._em import (
    EMResult as EMResult,
    mlem as mlem,
    ordered_subsets as ordered_subsets,
    osem as osem,
    poisson_log_likelihood as poisson_log_likelihood,
)
from ._map import bsrem as bsrem, osl_em as osl_em
from ._priors import (
    NEIGHBOUR_OFFSETS as NEIGHBOUR_OFFSETS,
    AbstractNeighbourPrior as AbstractNeighbourPrior,
    AbstractPrior as AbstractPrior,
    FunctionPrior as FunctionPrior,
    QuadraticPrior as QuadraticPrior,
    RelativeDifferencePrior as RelativeDifferencePrior,
    anatomical_weights as anatomical_weights,
)
from ._unrolled import (
    AbstractGradient as AbstractGradient,
    EndToEnd as EndToEnd,
    Sequential as Sequential,
    Truncated as Truncated,
    UnrolledEM as UnrolledEM,
    image_scale as image_scale,
    regularized_em_step as regularized_em_step,
    sensitivity_scale as sensitivity_scale,
)
from ._train import (
    FitResult as FitResult,
    TrainingData as TrainingData,
    fit as fit,
    reconstruct_batch as reconstruct_batch,
    relative_squared_error as relative_squared_error,
    training_loss as training_loss,
)
from ._batch import (
    batch_mlem as batch_mlem,
    batch_osem as batch_osem,
    patient_mesh as patient_mesh,
    stack_projectors as stack_projectors,
)
from .._serialization import load_model as load_model, save_model as save_model
