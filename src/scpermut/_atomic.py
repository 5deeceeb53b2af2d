"""Write outputs so that a killed step never leaves a half-written result behind; digest inputs."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it onto ``target`` only on success.

    Works for files and folders alike: whatever the caller writes at the yielded path
    replaces ``target`` in one rename, and is removed if the block raises.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes)
    handle, name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(handle)
    tmp = Path(name)
    tmp.unlink()
    try:
        yield tmp
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_paths(*targets: str | os.PathLike) -> Iterator[list[Path]]:
    """Temporary paths for a set of outputs, renamed onto their targets only if the block succeeds.

    A failure anywhere in the block leaves every target as it was. The renames run last target
    first, so the first target (the step's main result) appears only after the rest of its set.
    """
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(atomic_path(target)) for target in targets]


def write_text(target: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def json_text(data) -> str:
    """``data`` as the indented, key-sorted JSON every scpermut record file uses."""
    return json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"


def write_json(target: str | os.PathLike, data) -> None:
    """Write ``data`` as indented JSON to ``target`` atomically."""
    write_text(target, json_text(data))


def write_h5ad(adata, target: str | os.PathLike) -> None:
    """Write an AnnData to ``target`` atomically (compressed, so shipped outputs stay small)."""
    with atomic_path(target) as tmp:
        adata.write_h5ad(tmp, compression="gzip")


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
