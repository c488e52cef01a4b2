"""Identifiers and timing read from DICOM datasets, for scanner-coordinate outputs and units.

:func:`dicom_metadata` returns (only the keys the dataset has):

- ``StudyInstanceUID``, ``FrameOfReferenceUID``, ``SeriesInstanceUID``, ``PatientID``,
  ``PatientName``, ``PatientBirthDate``, ``PatientSex``, ``StudyDate``, ``StudyTime``,
  ``StudyID``, ``AccessionNumber``, ``Manufacturer``: copied into outputs;
- ``collimator_name``: Collimator/Grid Name (0018,1180) of the first Detector Information
  Sequence item;
- ``frame_duration_s``: Actual Frame Duration (0018,1242), ms in the file, per view in
  seconds; from the Rotation Information Sequence (0054,0052) of an NM TOMO file, else the
  dataset's own; ``acquisition_duration_s``: that times Number of Frames in Rotation
  (0054,0053) (the heads acquire at once);
- ``acquisition_datetime``: Acquisition Date/Time (0008,0022/0032), else Series Date/Time, as
  a :class:`datetime.datetime`;
- ``half_life_s``: Radionuclide Half Life (0018,1075) of the Radiopharmaceutical Information
  Sequence (0054,0016); ``injection_datetime``: its Radiopharmaceutical Start DateTime
  (0018,1078) or Start Time (0018,1072) on the study date; ``injected_activity_bq``:
  Radionuclide Total Dose (0018,1074).
"""

from __future__ import annotations

import datetime

COPIED_KEYWORDS = ("StudyInstanceUID", "FrameOfReferenceUID", "SeriesInstanceUID", "PatientID", "PatientName",
                   "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
                   "Manufacturer")


def parse_dicom_datetime(date, time=None) -> datetime.datetime | None:
    """``YYYYMMDD`` (+ ``HHMMSS.ffffff``) or a DT ``YYYYMMDDHHMMSS.ffffff`` -> datetime, or ``None``."""
    if not date:
        return None
    text = str(date).strip() + ("" if time is None else str(time).strip())
    text = text.split("+")[0].split("-")[0]
    if "." in text:
        whole, frac = text.split(".", 1)
    else:
        whole, frac = text, ""
    whole = whole.ljust(14, "0")[:14]
    try:
        value = datetime.datetime.strptime(whole, "%Y%m%d%H%M%S")
    except ValueError:
        return None
    if frac:
        value += datetime.timedelta(seconds=float("0." + frac))
    return value


def dicom_metadata(ds) -> dict:
    """See the module docstring."""
    meta = {}
    for keyword in COPIED_KEYWORDS:
        value = getattr(ds, keyword, None)
        if value not in (None, ""):
            meta[keyword] = str(value)
    detectors = list(getattr(ds, "DetectorInformationSequence", []) or [])
    collimator = getattr(detectors[0], "CollimatorGridName", None) if detectors else None
    if collimator not in (None, ""):
        meta["collimator_name"] = str(collimator).strip()
    rotations = list(getattr(ds, "RotationInformationSequence", []) or [])
    duration = getattr(rotations[0], "ActualFrameDuration", None) if rotations else None
    if duration is None:
        duration = getattr(ds, "ActualFrameDuration", None)
    if duration not in (None, ""):
        meta["frame_duration_s"] = float(duration) / 1000.0
        frames = getattr(rotations[0], "NumberOfFramesInRotation", None) if rotations else None
        if frames not in (None, ""):
            meta["acquisition_duration_s"] = meta["frame_duration_s"] * int(frames)
    when = parse_dicom_datetime(getattr(ds, "AcquisitionDate", None), getattr(ds, "AcquisitionTime", None))
    if when is None:
        when = parse_dicom_datetime(getattr(ds, "SeriesDate", None), getattr(ds, "SeriesTime", None))
    if when is not None:
        meta["acquisition_datetime"] = when
    radiopharmaceuticals = list(getattr(ds, "RadiopharmaceuticalInformationSequence", []) or [])
    if radiopharmaceuticals:
        item = radiopharmaceuticals[0]
        half_life = getattr(item, "RadionuclideHalfLife", None)
        if half_life not in (None, ""):
            meta["half_life_s"] = float(half_life)
        dose = getattr(item, "RadionuclideTotalDose", None)
        if dose not in (None, ""):
            meta["injected_activity_bq"] = float(dose)
        start = getattr(item, "RadiopharmaceuticalStartDateTime", None)
        injected = parse_dicom_datetime(start) if start else parse_dicom_datetime(
            getattr(ds, "StudyDate", None), getattr(item, "RadiopharmaceuticalStartTime", None))
        if injected is not None and (start or getattr(item, "RadiopharmaceuticalStartTime", None)):
            meta["injection_datetime"] = injected
    return meta
