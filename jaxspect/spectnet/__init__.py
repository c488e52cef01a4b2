"""SPECTnet (Shao, Rowe & Du 2021): direct 2-D reconstruction by an autoencoder's decoder fed
by a projection network, trained in two stages on random brain phantoms.

- Networks (``_networks.py``): :class:`SPECTnetEncoder` (also the projection network, two input
  channels), :class:`SPECTnetDecoder`, :class:`Autoencoder`, :class:`SPECTnet`, :func:`reconstruct`.
- Data and training (``_training.py``): the LEHR acquisition model (:func:`spectnet_geometry`,
  :func:`lehr_psf`), :class:`PhantomSet` (phantoms generated on the fly from keys),
  :func:`train_two_stage` (autoencoder, projection network, fine-tuning) and
  :func:`train_end_to_end` (the one-step comparison).
- Models are saved and loaded with :func:`jaxspect.save_model` / :func:`jaxspect.load_model`.
"""

from ._networks import (
    Autoencoder as Autoencoder,
    BatchNorm as BatchNorm,
    SPECTnet as SPECTnet,
    SPECTnetDecoder as SPECTnetDecoder,
    SPECTnetEncoder as SPECTnetEncoder,
    build as build,
    count_network_parameters as count_network_parameters,
    pad_sinogram as pad_sinogram,
    reconstruct as reconstruct,
    views_to_sinogram as views_to_sinogram,
)
from ._training import (
    CLINICAL_COUNTS_PER_SLICE as CLINICAL_COUNTS_PER_SLICE,
    PhantomSet as PhantomSet,
    StageResult as StageResult,
    TrainingConfig as TrainingConfig,
    TwoStageResult as TwoStageResult,
    add_poisson_noise as add_poisson_noise,
    fine_tune as fine_tune,
    lehr_psf as lehr_psf,
    project_phantoms as project_phantoms,
    spectnet_geometry as spectnet_geometry,
    train_autoencoder as train_autoencoder,
    train_end_to_end as train_end_to_end,
    train_projection_network as train_projection_network,
    train_two_stage as train_two_stage,
)
