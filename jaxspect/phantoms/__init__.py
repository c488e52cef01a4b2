"""Phantoms made in code (nothing is downloaded): simple analytic shapes on the image grid."""

from ._shapes import ellipsoid as ellipsoid, elliptic_cylinder as elliptic_cylinder, voxel_centres as voxel_centres
