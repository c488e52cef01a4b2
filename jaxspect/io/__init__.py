"""Reading and writing SPECT files: SIMIND/Interfile, STIR (``.hs``/``.hv``) and DICOM NM projections, NIfTI volumes,
DICOM CT series (-> attenuation maps on the SPECT grid) and DICOM volumes in scanner coordinates.

Everything returned is in jaxspect's layout and units: projections ``(nx, nz, nview)`` in
counts, angles in radians in jaxspect's convention, radii and pixel sizes in mm, volumes
``(nx, ny, nz)`` in patient LPS order. See :mod:`jaxspect.io._projections` for how file angles
map onto jaxspect's (``theta = radians(DICOM gantry angle)``). pydicom and nibabel are needed
only by the functions that use them (``pip install "jaxspect[io]"``).

Files are checked before they are read (see :mod:`jaxspect.io._safety`): a data file named in a
header must lie in the header's folder, sizes are compared with the header before any read,
implausible values (byte order, units) are refused, and every writer replaces its files
atomically. Refusals are :class:`FileCheckError` (a ``ValueError``) naming the file.
"""

from pathlib import Path

from ._affine import grid_affine as grid_affine
from ._ct import (
    DicomVolume as DicomVolume,
    ct_to_mumap as ct_to_mumap,
    hu_to_mu as hu_to_mu,
    read_dicom_volume as read_dicom_volume,
    resample_to_grid as resample_to_grid,
)
from ._dicom import read_dicom_projections as read_dicom_projections
from ._dicom_write import (
    write_dicom_ct as write_dicom_ct,
    write_dicom_projections as write_dicom_projections,
    write_dicom_volume as write_dicom_volume,
)
from ._interfile import (
    HEADER_SUFFIXES as INTERFILE_SUFFIXES,
    interfile_data_path as interfile_data_path,
    parse_interfile_header as parse_interfile_header,
    read_cor as read_cor,
    read_interfile as read_interfile,
    write_interfile as write_interfile,
)
from ._mumap import check_mumap_units as check_mumap_units, read_mumap as read_mumap
from ._nifti import read_nifti as read_nifti, write_nifti as write_nifti
from ._projections import ProjectionData as ProjectionData
from ._safety import (
    FileCheckError as FileCheckError,
    atomic_write as atomic_write,
    check_output as check_output,
    check_output_folder as check_output_folder,
)
from ._simind import (
    is_simind_header as is_simind_header,
    parse_simind_comments as parse_simind_comments,
    read_simind as read_simind,
    simind_collimator as simind_collimator,
)
from ._scatter import dew_scatter as dew_scatter, pick_windows as pick_windows, tew_scatter as tew_scatter
from ._simind_density import (
    DENSITY_MAP_SUFFIX as SIMIND_DENSITY_MAP_SUFFIX,
    SimindDensityMap as SimindDensityMap,
    load_simind_density_map as load_simind_density_map,
    read_simind_density_map as read_simind_density_map,
)
from ._stir import (
    STIR_IMAGE_SUFFIX as STIR_IMAGE_SUFFIX,
    STIR_PROJECTION_SUFFIX as STIR_PROJECTION_SUFFIX,
    StirImage as StirImage,
    read_stir_image as read_stir_image,
    read_stir_mumap as read_stir_mumap,
    read_stir_projections as read_stir_projections,
)

DICOM_SUFFIXES = (".dcm", ".dicom")


def read_projections(path, **kwargs) -> ProjectionData:
    """Read projections by file extension: Interfile header (``.h00``, ``.hdr``, ``.h33``) with
    :func:`read_simind` when SIMIND wrote it (all its energy windows), else
    :func:`read_interfile`; STIR's ``.hs`` with :func:`read_stir_projections`; DICOM (``.dcm``,
    ``.dicom``) with :func:`read_dicom_projections`; ``kwargs`` go to that reader."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == STIR_PROJECTION_SUFFIX:
        return read_stir_projections(path, **kwargs)
    if suffix == STIR_IMAGE_SUFFIX:
        raise ValueError(f"{path} is a STIR image header (.hv), not projections: STIR's projection data are .hs files "
                         "(a .hv attenuation map goes to --mumap / read_mumap)")
    if suffix in INTERFILE_SUFFIXES:
        return read_simind(path, **kwargs) if is_simind_header(path) else read_interfile(path, **kwargs)
    if suffix in DICOM_SUFFIXES:
        return read_dicom_projections(path, **kwargs)
    raise ValueError(
        f"unknown projection file format {suffix or '(no extension)'!r} of {path}: expected an Interfile "
        f"header {INTERFILE_SUFFIXES}, STIR projection data {STIR_PROJECTION_SUFFIX!r} or DICOM {DICOM_SUFFIXES}"
    )
