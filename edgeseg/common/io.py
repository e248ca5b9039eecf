"""Atomic file output and hashing (torch-free; used by checkpoints, artifacts, manifests and reports).

An interrupted run never leaves a half-written file that looks complete: everything is written to a
temporary name in the destination folder and renamed into place only once it is whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(dest: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success it is renamed to ``dest``, on error removed.

    Use it for writers that take a file name (``torch.save``, ``cv2.VideoWriter``, exporters)::

        with atomic_path("model.onnx") as tmp:
            torch.onnx.export(model, x, tmp)
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix or dest.suffix or ".tmp",
                               dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; finished files get the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
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
