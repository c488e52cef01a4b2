"""SPECTnet (Shao, Rowe & Du 2021): direct 2-D reconstruction by an autoencoder's decoder fed
by a projection network, trained in two stages on random brain phantoms.

- Networks (``_networks.py``): :class:`SPECTnetEncoder` (also the projection network, two input
  channels), :class:`SPECTnetDecoder`, :class:`Autoencoder`, :class:`SPECTnet`, :func:`reconstruct`.
- Acquisition (``_acquisition.py``): the LEHR brain-SPECT model (:func:`spectnet_geometry`,
  :func:`lehr_psf`, :func:`project_phantoms`, :func:`add_poisson_noise`).
- Data (``_data.py``): :class:`PhantomSet` (phantoms generated on the fly from keys), batches.
- Training (``_training.py``): :func:`train_two_stage` (autoencoder, projection network,
  fine-tuning) and :func:`train_end_to_end` (the one-step comparison), through
  :func:`jaxspect.training.train`.
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
from ._acquisition import (
    CLINICAL_COUNTS_PER_SLICE as CLINICAL_COUNTS_PER_SLICE,
    NVIEW as NVIEW,
    PIXEL_MM as PIXEL_MM,
    RADIUS_MM as RADIUS_MM,
    add_poisson_noise as add_poisson_noise,
    bin_sinogram as bin_sinogram,
    lehr_psf as lehr_psf,
    lehr_system_fwhm as lehr_system_fwhm,
    oversampled_geometry as oversampled_geometry,
    project_phantoms as project_phantoms,
    spectnet_geometry as spectnet_geometry,
)
from ._data import (
    PhantomSet as PhantomSet,
    SPECTnetBatch as SPECTnetBatch,
    downsample_phantoms as downsample_phantoms,
    split_keys as split_keys,
)
from ._training import (
    StageResult as StageResult,
    TrainingConfig as TrainingConfig,
    TwoStageResult as TwoStageResult,
    encode_batches as encode_batches,
    fine_tune as fine_tune,
    train_autoencoder as train_autoencoder,
    train_end_to_end as train_end_to_end,
    train_projection_network as train_projection_network,
    train_two_stage as train_two_stage,
)
