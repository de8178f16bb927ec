"""Atomic output: write to a temporary sibling, then rename, so no partial file is ever left."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from phenaki_cli.errors import UserError


def check_output(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse to clobber an existing output unless asked, and check the folder is writable."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise UserError(f"{path}: already exists (pass --overwrite to replace it)")
    parent = path.parent if str(path.parent) else Path(".")
    if parent.exists() and not os.access(parent, os.W_OK):
        raise UserError(f"{path}: cannot write in folder {parent}")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`.

    The temporary name keeps the suffix so tools that pick a format by extension
    (ffmpeg) still work. On any error or Ctrl-C the temporary is removed.
    """
    path = Path(path)
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
    try:
        usual_modes(tmp)  # mkstemp / mkdtemp make 0600 / 0700
        yield tmp
        if directory:
            usual_modes(tmp)  # what was written inside (some writers, safetensors', make 0600 files)
        if directory and path.is_dir():
            # a directory cannot be renamed over another: move the old one aside first, so
            # a crash between the two renames leaves it (as .NAME.old) rather than nothing
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def usual_modes(path: Path) -> None:
    """Give `path` (and, for a folder, everything in it) the mode a plain `open` or `mkdir` would:
    0666 / 0777 less the user's umask, as any other tool's output gets."""
    umask = os.umask(0)
    os.umask(umask)
    for item in [path, *(path.rglob("*") if path.is_dir() else ())]:
        if not item.is_symlink():
            os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~umask)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
