"""Writing outputs so that readers never see half of one, and never lose an old one by accident.

Every file the project writes goes through here: a temporary file beside the
destination, renamed into place once complete (`atomic_output`,
`write_atomically`); a folder is built aside and moved in whole
(`replace_folder`); existing outputs are refused unless the caller asked to
replace them (`refuse_existing`). numpy and the standard library only: the
device side uses it too.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping

OVERWRITE_HINT = "Pass overwrite=True (--overwrite, or OVERWRITE=1 with make) to replace it, or choose another path."


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _new_file_mode() -> int:
    # mkstemp creates 0600 files; outputs get the permissions of any new file.
    return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[pathlib.Path]:
    """Yields a temporary path beside `path`; renames it to `path` when the block succeeds.

    For writers that need a file name (numpy, tarfile, ONNX export). On any
    error the temporary file is removed and `path` keeps its old content.

    Args:
      path: the destination; its folder is created if missing.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name keeps the destination's suffix: some writers (ONNX export) go by it.
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(handle)
    temporary_path = pathlib.Path(temporary)
    try:
        yield temporary_path
        os.chmod(temporary_path, _new_file_mode())
        os.replace(temporary_path, path)
    finally:
        temporary_path.unlink(missing_ok=True)


def write_atomically(path: str | os.PathLike, data: bytes | str) -> pathlib.Path:
    """Writes `data` (text is UTF-8) to `path` through a temporary file; returns the path."""
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    with atomic_output(path) as temporary, open(temporary, "wb") as stream:
        stream.write(payload)
        stream.flush()
        os.fsync(stream.fileno())
    return pathlib.Path(path)


def write_files_atomically(
    folder: str | os.PathLike, contents: Mapping[str, bytes], *, remove: Iterable[str] = ()
) -> pathlib.Path:
    """Writes several files into `folder` at once: into a hidden staging folder, then renamed into place.

    A new folder appears complete or not at all. In an existing folder each
    file is replaced by a rename, in the order of `contents` (put an index or
    manifest last), and the files named in `remove` that `contents` lacks are
    deleted. Names starting with '.' are skipped by Android's asset packaging,
    so a staging folder left by a crash never reaches an APK.

    Args:
      folder: the destination folder (created with its parents if missing).
      contents: file name -> bytes.
      remove: names of stale files to delete once the new ones are in place.
    """
    folder = pathlib.Path(folder)
    if not folder.exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{folder.name}-", suffix=".tmp", dir=folder.parent))
        try:
            staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the folder it becomes is not.
            for name, data in contents.items():
                (staging / name).write_bytes(data)
            staging.rename(folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return folder
    staging = pathlib.Path(tempfile.mkdtemp(prefix=".staging-", suffix=".tmp", dir=folder))
    try:
        for name, data in contents.items():
            (staging / name).write_bytes(data)
        for name in contents:
            os.replace(staging / name, folder / name)
        for name in set(remove) - set(contents):
            if (folder / name).is_file():
                (folder / name).unlink()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def refuse_existing(paths: Iterable[str | os.PathLike], *, overwrite: bool, hint: str = OVERWRITE_HINT) -> None:
    """Refuses outputs that exist unless `overwrite`, and folders where files go.

    Raises:
      IsADirectoryError: a folder sits where one of the files goes.
      FileExistsError: one of them exists and `overwrite` is False.
    """
    for target in map(pathlib.Path, paths):
        if target.is_dir():
            raise IsADirectoryError(f"Output {str(target)!r} is a folder; pass a file path.")
        if target.exists() and not overwrite:
            raise FileExistsError(f"{str(target)!r} exists. {hint}")


def replace_folder(source: pathlib.Path, destination: pathlib.Path) -> None:
    """Moves a finished folder into place, replacing an older one if any."""
    if not destination.exists():
        source.rename(destination)
        return
    # A folder cannot be renamed over a non-empty one: move the old one aside
    # first, so that the destination never mixes files of both.
    trash = destination.with_name(f".{destination.name}-old-{os.getpid()}.tmp")
    shutil.rmtree(trash, ignore_errors=True)
    destination.rename(trash)
    source.rename(destination)
    shutil.rmtree(trash, ignore_errors=True)


def sha256_of(path: str | os.PathLike) -> str:
    """The file's sha256 as hex, read in chunks so large models stay cheap."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """The sha256 of `data` as hex."""
    return hashlib.sha256(data).hexdigest()
