"""Path safety and atomic writes, shared by every reader and writer and by the command line.

- :func:`resolve_data_file`: a data file named *inside* a header must resolve inside the
  header's folder; anything else is refused without being opened, stat-ed or described.
- :func:`check_file_size`: compare a file's size (``os.stat``) with what its header promises,
  before any read, so a lying header allocates nothing.
- :func:`check_output`: an output path is refused when it exists (unless ``overwrite``), when it
  is one of the inputs, or when its folder cannot be created or written; checked before any
  computation.
- :func:`atomic_write`: every file is written to a temporary name in its own folder and renamed
  into place (``os.replace``), so a crash leaves the old file or none, never a truncated one.

Every refusal is a :class:`FileCheckError` (a ``ValueError``) whose message names the file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path


class FileCheckError(ValueError):
    """A file or path failed a check (refused, too small, implausible): the message names it."""


def resolve_data_file(header_path, name: str, *, key: str) -> Path:
    """The file ``name`` given by ``key`` in the header ``header_path``, resolved inside the
    header's folder (symbolic links followed).

    Absolute names and names that leave the folder (``..``, a link pointing out) are refused
    with a :class:`FileCheckError` that says neither whether the target exists nor anything
    about it: a header must not be able to make jaxspect read an arbitrary file. Pass such a
    file explicitly through the reader's API argument instead.
    """
    header_path = Path(header_path)
    folder = header_path.resolve().parent
    if os.path.isabs(name) or Path(name).drive:
        raise FileCheckError(f"header {header_path}: '{key} := {name}' is an absolute path; a data file "
                             "named in a header must lie in the header's folder")
    target = (folder / name).resolve()
    if not target.is_relative_to(folder):
        raise FileCheckError(f"header {header_path}: '{key} := {name}' points outside the header's folder; "
                             "a data file named in a header must lie in that folder")
    return target


def check_file_size(path, expected_bytes: int, *, what: str) -> int:
    """``os.stat`` size of ``path``; :class:`FileCheckError` unless it equals ``expected_bytes``
    (computed from a header, before anything is read). ``what`` names the claim."""
    size = os.stat(path).st_size
    if size != expected_bytes:
        raise FileCheckError(f"data file {path} holds {size} bytes, but {what} = {expected_bytes} bytes")
    return size


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def check_output(path, *, overwrite: bool = False, inputs: Sequence = (), what: str = "output") -> Path:
    """Check an output path before anything is computed; returns it as a ``Path``.

    Refused (:class:`FileCheckError`, naming ``what`` and the path): an existing file unless
    ``overwrite``; an existing directory; a path equal to any of ``inputs`` (even with
    ``overwrite``); a folder that is a file or cannot be written. A missing folder is created.
    """
    path = Path(path)
    for source in inputs:
        if source is not None and _same_file(path, Path(source)):
            raise FileCheckError(f"{what} {path} is also an input ({source}); choose another output name")
    if path.is_dir():
        raise FileCheckError(f"{what} {path} is a directory; expected a file name")
    if path.exists() and not overwrite:
        raise FileCheckError(f"{what} {path} exists; pass --overwrite (overwrite=True) to replace it")
    check_output_folder(path.parent, what=f"{what} {path}")
    return path


def check_output_folder(folder, *, what: str = "output folder") -> Path:
    """Create ``folder`` if missing; :class:`FileCheckError` if it (or a parent) is a file or
    it cannot be written."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise FileCheckError(f"{what}: folder {folder} cannot be created (a file of that name is in the way)") from None
    except OSError as e:
        raise FileCheckError(f"{what}: folder {folder} cannot be created: {e.strerror}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise FileCheckError(f"{what}: folder {folder} is not writable")
    return folder


def _suffixes(path: Path) -> str:
    """``.nii.gz``-style suffixes that writers (nibabel, matplotlib) infer the format from."""
    return "".join(s for s in path.suffixes if 1 < len(s) <= 5 and s[1:].isalnum())


@contextlib.contextmanager
def atomic_write(path) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder (same suffixes); when the block finishes,
    flush it to disk and rename it onto ``path``. On an exception the temporary file is
    removed and ``path`` is untouched.

    >>> with atomic_write("out.nii.gz") as tmp:
    ...     nibabel.save(image, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:  # a fresh name, created with the usual permissions (0o666 less the umask)
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp{_suffixes(path)}"
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_write_group(paths: Sequence) -> Iterator[list[Path]]:
    """:func:`atomic_write` for files that belong together (a header and its data): every
    temporary file is written first, then they are renamed in the given order (data first,
    header last), so a reader never finds a header whose data is missing or old."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(atomic_write(p)) for p in reversed(paths)][::-1]
