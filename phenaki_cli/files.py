"""Atomic output: a command's files are written to temporary siblings, checked, flushed to disk, and
only then renamed into place, together, so no partial file and no mix of old and new is ever left.

    outputs = Outputs([sidecar, video], overwrite)      # checked before any work
    with outputs.staged() as tmp:                       # tmp[path]: where to write each
        ...
    # here every file is in place, the last one named last; on any error or Ctrl-C none was touched

The renames run with SIGINT / SIGTERM held back, and a failed rename puts back what it had moved,
so an interruption leaves either the complete new set or the old one. Disk-full, quota and I/O
errors become one line naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from phenaki_cli.errors import UserError

# errors of the disk rather than of the program: one line, the old files kept
DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM}


def check_output(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse to clobber an existing output unless asked, and check the folder is writable."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise UserError(f"{path}: already exists (pass --overwrite to replace it)")
    parent = path.parent if str(path.parent) else Path(".")
    if parent.exists() and not os.access(parent, os.W_OK):
        raise UserError(f"{path}: cannot write in folder {parent}")
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


class Outputs:
    """The files one command writes, as one unit. Made before any work, it refuses existing files
    (without `overwrite`), any of the command's own `inputs`, and folders it cannot write in.

    `folders`: the outputs that are directories (a PNG-folder video, a model directory)."""

    def __init__(self, paths: Iterable[str | os.PathLike], overwrite: bool = False,
                 inputs: Iterable[str | os.PathLike | None] = (), folders: Iterable[str | os.PathLike] = ()):
        self.paths = [Path(p) for p in paths]
        self.folders = {Path(p) for p in folders}
        sources = [Path(i) for i in inputs if i is not None]
        for path in self.paths:
            for source in sources:
                if _same_file(path, source):
                    raise UserError(f"{path}: is also an input of this command; write the output elsewhere")
            check_output(path, overwrite)

    @contextlib.contextmanager
    def staged(self) -> Iterator[dict[Path, Path]]:
        """Temporary paths for every output; on success they replace the outputs, in order."""
        staging: dict[Path, Path] = {}
        try:
            for path in self.paths:
                staging[path] = _temporary(path, path in self.folders)
            yield staging
            for tmp in staging.values():
                _flush(tmp)
            _replace_all(staging)
        except OSError as e:
            raise _disk_error(e, staging) from None
        finally:
            for tmp in staging.values():
                _remove(tmp)


def _temporary(path: Path, directory: bool) -> Path:
    """An empty temporary beside `path` with the usual mode; it keeps the suffix, so tools that pick
    a format by extension (ffmpeg) still work."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{path}: cannot create folder {path.parent} ({e.strerror})") from None
    if not os.access(path.parent, os.W_OK):
        raise UserError(f"{path}: cannot write in folder {path.parent}")
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    usual_modes(tmp)  # mkstemp / mkdtemp make 0600 / 0700
    return tmp


def _flush(tmp: Path) -> None:
    """Everything written under `tmp` on the disk (so a rename never exposes a file the disk has not
    got), with the usual modes (some writers, safetensors', make 0600 files)."""
    mask = _umask()
    for item in [tmp, *(tmp.rglob("*") if tmp.is_dir() else ())]:
        if item.is_file() or item.is_dir():
            os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~mask)
            fd = os.open(item, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back for the few renames (delivered right after)."""
    held = {signal.SIGINT, signal.SIGTERM}
    try:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    except (AttributeError, ValueError):  # not the main thread, or no POSIX signals
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _replace_all(staging: dict[Path, Path]) -> None:
    """Rename each temporary onto its output, in order; old outputs are moved aside first and put
    back if a later rename fails, then deleted."""
    moved: list[tuple[Path, Path | None]] = []
    with _signals_held():
        try:
            for path, tmp in staging.items():
                old = None
                if path.exists() or path.is_symlink():
                    old = path.with_name(f".{path.name}.old")
                    _remove(old)
                    os.replace(path, old)
                moved.append((path, old))
                os.replace(tmp, path)
            _sync_folder(next(iter(staging)).parent)
        except BaseException:
            for path, old in reversed(moved):
                _remove(path)  # the new one, if it got there
                if old is not None:
                    os.replace(old, path)
            raise
        for _, old in moved:
            if old is not None:
                _remove(old)


def _sync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _disk_error(e: OSError, staging: dict[Path, Path]) -> Exception:
    """A disk-full / quota / I/O error as one line naming the output it was writing."""
    if e.errno not in DISK_ERRORS:
        return e
    where = Path(e.filename) if e.filename else None
    named = next((path for path, tmp in staging.items() if where is not None and (where == tmp or tmp in where.parents)),
                 next(iter(staging), where))
    return UserError(f"{named}: {e.strerror or os.strerror(e.errno)}; nothing was replaced")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` (one output: see Outputs)."""
    path = Path(path)
    with Outputs([path], overwrite=True, folders=[path] if directory else []).staged() as staging:
        yield staging[path]


def usual_modes(path: Path) -> None:
    """Give `path` (and, for a folder, everything in it) the mode a plain `open` or `mkdir` would:
    0666 / 0777 less the user's umask, as any other tool's output gets."""
    mask = _umask()
    for item in [path, *(path.rglob("*") if path.is_dir() else ())]:
        if not item.is_symlink():
            os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~mask)


def _umask() -> int:
    mask = os.umask(0)  # reading it means setting it: put it straight back
    os.umask(mask)
    return mask
