"""Where cached artefacts live and the one atomic file writer every record and artefact goes through."""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # graft_core/
ASSETS_DIR = PACKAGE_DIR / "assets"


def cache_root() -> Path:
    """Root of the on-disk cache: ``$GRAFTBENCH_CACHE`` or ``~/.cache/graftbench``."""
    return Path(os.environ.get("GRAFTBENCH_CACHE", Path.home() / ".cache" / "graftbench"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file in the same folder, fsync it, then ``os.replace`` it onto ``path``.

    A reader sees the old file or the new one, never a part, and after a crash the new file is either complete or
    absent (fsync before the rename). The temp file is created with mode ``0o666`` so the kernel applies the umask
    (0644 under the usual 022), as ``open()`` would: ``mkstemp``'s 0600 left records unreadable to the group that
    shares a results folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
            break
        except FileExistsError:  # 48 random bits: only a pathological collision gets here
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno is not None and err.filename is None:
            # a failed write/fsync (no space, quota) names no file: name the record, so the error line can
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_torch_save(obj: Any, path: Path) -> None:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())
