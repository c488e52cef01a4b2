"""Statistical reconstruction: ML-EM and OS-EM."""

from ._em import (
    EMResult as EMResult,
    mlem as mlem,
    ordered_subsets as ordered_subsets,
    osem as osem,
    poisson_log_likelihood as poisson_log_likelihood,
)
