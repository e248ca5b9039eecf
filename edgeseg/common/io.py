"""Atomic file output and hashing (torch-free; used by checkpoints, artifacts, manifests and reports).

An interrupted run never leaves a half-written file that looks complete: everything is written to a
temporary name in the destination folder and renamed into place only once it is whole.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class WriteError(OSError):
    """A file could not be written (device full, quota, I/O error). The message is one line that names the
    file; the partial file was removed, never renamed into place."""

    def __str__(self) -> str:
        return str(self.strerror)


# what the C++ writers say when a write fails (torch.save's PyTorchStreamWriter, std::ofstream users such as
# OpenVINO's serializer): they carry no errno, so the free space tells a full device from another failure
_NATIVE_WRITE_FAILURES = ("inline_container.cc", "file write failed", "unexpected pos", "basic_ios::clear",
                          "iostream error", "No space left on device", "database or disk is full")
NO_SPACE_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
LOW_SPACE_BYTES = 1 << 20  # less than this free after a failed write: the device is full


def free_bytes(path: str | Path) -> int | None:
    """Bytes free for this user on the device that holds ``path`` (its nearest existing folder); None when
    it cannot be told."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p if p.is_dir() else p.parent).free
    except OSError:
        return None


def write_error(exc: BaseException, path: str | Path | None) -> WriteError | None:
    """The one-line :class:`WriteError` for ``exc`` when it is a failed write of ``path`` (ENOSPC/EDQUOT,
    EIO, or the messages of torch's and C++ writers), else None.

    Examples:
        >>> str(write_error(OSError(errno.ENOSPC, "No space left on device"), "runs/a/best.pt"))
        'no space left on device writing runs/a/best.pt; free some space (or write elsewhere) and run again'
    """
    if isinstance(exc, WriteError):
        return exc
    where = f" writing {path}" if path is not None else ""
    code = exc.errno if isinstance(exc, OSError) else None
    if code in NO_SPACE_ERRNOS:
        return _no_space(where, code)
    if code == errno.EIO:
        return WriteError(errno.EIO, f"I/O error{where}: the device failed; check it and run again")
    text = str(exc)
    if isinstance(exc, (RuntimeError, OSError)) and any(m in text for m in _NATIVE_WRITE_FAILURES):
        free = free_bytes(path) if path is not None else None
        if "No space left" in text or "disk is full" in text or (free is not None and free < LOW_SPACE_BYTES):
            return _no_space(where, errno.ENOSPC)
        line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        what = str(path) if path is not None else "a file"
        return WriteError(errno.EIO, f"cannot write {what} ({type(exc).__name__}: {line[:160]}); check the "
                                     "device and run again")
    return None


def _no_space(where: str, code: int) -> WriteError:
    return WriteError(code, f"no space left on device{where}; free some space (or write elsewhere) and run again")


@contextlib.contextmanager
def atomic_path(dest: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success it is renamed to ``dest``, on error removed.

    Use it for writers that take a file name (``torch.save``, ``cv2.VideoWriter``, exporters)::

        with atomic_path("model.onnx") as tmp:
            torch.onnx.export(model, x, tmp)

    Raises:
        WriteError: the write failed for want of space (or on an I/O error): one line naming ``dest``.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix or dest.suffix or ".tmp",
                                   dir=dest.parent)
    except OSError as exc:
        raise write_error(exc, dest) or exc from None
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; finished files get the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        failed = write_error(exc, dest)
        if failed is not None and failed is not exc:
            raise failed from exc
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(dest: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``dest`` atomically (fsync before rename)."""
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return dest


def atomic_write_text(dest: str | Path, text: str) -> Path:
    return atomic_write_bytes(dest, text.encode("utf-8"))


def atomic_write_json(dest: str | Path, obj: Any) -> Path:
    return atomic_write_text(dest, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def find_shipped_yaml(ref: str | Path, folder: Path, kind: str, show_folder: bool = False) -> Path:
    """A YAML file from a path, or the name of one shipped in ``folder`` (a bench suite, a recipe).

    Raises:
        FileNotFoundError: neither a file nor a shipped name; the message lists the shipped names and the
            closest one.
    """
    import difflib

    path = Path(ref).expanduser()
    if path.is_file():
        return path
    named = folder / f"{ref}.yaml"
    if named.is_file():
        return named
    shipped = sorted(p.stem for p in folder.glob("*.yaml"))
    close = difflib.get_close_matches(str(ref), shipped, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    where = f" (in {folder})" if show_folder else ""
    raise FileNotFoundError(f"{kind} {str(ref)!r} not found.{hint} Shipped {kind}s: {', '.join(shipped)}{where}, "
                            "or give a YAML path")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_writable_dir(path: str | Path) -> Path:
    """Create ``path`` if needed and check it is a writable folder; raise a one-line error otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"output path {path} exists and is not a folder; choose another --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-", delete=True)
        probe.close()
    except OSError as exc:
        raise PermissionError(f"cannot write to {path} ({exc.strerror}); choose a writable --out") from None
    return path


STALE_AFTER_S = 6 * 3600  # no edgeseg write takes this long; a younger temporary may belong to a live run


def clean_stale(folder: str | Path, patterns: tuple[str, ...] = (".*.staging-*", ".*.tmp", ".*.*.*"),
                older_than_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove the hidden temporaries an interrupted run left in ``folder`` (``atomic_path``'s ``.NAME.XXXX.SUF``
    files, conversion staging folders) once they are older than ``older_than_s``; returns what was removed.

    Only dot-files matching ``patterns`` are touched, never a finished file.
    """
    import shutil
    import time

    folder = Path(folder)
    if not folder.is_dir():
        return []
    cutoff = time.time() - older_than_s
    removed = []
    for pattern in patterns:
        for p in folder.glob(pattern):
            try:
                if p.name.startswith(".") and p.lstat().st_mtime < cutoff:
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
                    removed.append(p)
            except OSError:
                continue  # another process cleaned it, or it is not ours to remove
    return removed
