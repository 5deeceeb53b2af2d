"""When a finished result may be reused: only under a key that names everything that decides it.

A method run (one method on the splits of one task and dataset, over its seeds) is stored
with its key: the SHA-256 of the method, its full settings, the seeds, the thread count, the
split keys, the versions of the libraries that compute it and the fingerprints of the code
that runs it (the benchmark files below and, for scpermut's own entries, every ``.py`` file of
the package). A stored run whose key differs from the one the code at hand computes is stale:
it is deleted and computed again, never shown. A split file is keyed the same way (its
definition, the dataset file's digest and the code that cuts it).
"""

from __future__ import annotations

import ast
import hashlib
import json
import shutil
from pathlib import Path

from scpermut._atomic import file_sha256  # the digest run.json records for inputs

HERE = Path(__file__).resolve().parent
# The benchmark files whose change can change what a method returns for a split.
METHOD_CODE = ("common.py", "methods.py", "worker.py")
SPLIT_CODE = ("common.py", "tasks.py")
# Method functions that run scpermut itself: their results depend on the package's code.
USES_PACKAGE = {"scpermut"}
# The package modules methods.py and cost.py import (``scpermut.Model`` lives in model.api,
# ``scpermut.annotate`` in annotation: the front file names them as strings, not imports).
PACKAGE_ROOTS = ("scpermut", "scpermut.model.api", "scpermut.annotation", "scpermut.data.preprocess", "scpermut.keys")
# A scpermut entry whose settings ask for a search also runs ``scpermut tune``.
TUNE_ROOTS = PACKAGE_ROOTS + ("scpermut.steps.tune",)
KEY_FILE = "key.json"


def digest_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()





def module_file(package: Path, module: str) -> Path | None:
    """The file of ``module`` (dotted, starting with the package's name) inside ``package``, if any."""
    base = package.joinpath(*module.split(".")[1:])
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path, module: str, is_package: bool) -> set[str]:
    """Every module named by an import statement anywhere in ``path`` (relative imports resolved).

    ``from x import y`` names both ``x`` and ``x.y``: ``y`` may be a submodule; names that are
    not files are dropped by the caller.
    """
    parts = module.split(".") if is_package else module.split(".")[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = parts[: len(parts) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def package_closure(package: Path, roots=PACKAGE_ROOTS) -> list[Path]:
    """The files of ``package`` that importing ``roots`` can load, parents' ``__init__`` included."""
    name = package.name
    seen: dict[str, Path] = {}
    pending = list(roots)
    while pending:
        module = pending.pop()
        if module in seen or not (module == name or module.startswith(name + ".")):
            continue
        path = module_file(package, module)
        if path is None:
            continue
        seen[module] = path
        parents = [".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)]
        pending += parents + sorted(imported_modules(path, module, path.name == "__init__.py"))
    return sorted(set(seen.values()))


def closure_fingerprint(package: Path, roots=PACKAGE_ROOTS) -> str:
    """SHA-256 over the relative path and bytes of every file of ``package_closure``."""
    digest = hashlib.sha256()
    for path in package_closure(package, roots):
        digest.update(str(path.relative_to(package)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def files_fingerprint(names, folder: Path = HERE) -> str:
    """SHA-256 over the names and bytes of the given files of ``folder``."""
    digest = hashlib.sha256()
    for name in sorted(names):
        digest.update(name.encode() + b"\0" + (folder / name).read_bytes() + b"\0")
    return digest.hexdigest()


def package_folder(repo: Path = HERE.parent) -> Path:
    """The scpermut package this interpreter imports; refused unless it is the repository's own source.

    The benchmark must measure the code at hand, not some other install of scpermut.
    """
    import scpermut

    folder = Path(scpermut.__file__).resolve().parent
    expected = (repo / "src" / "scpermut").resolve()
    if folder != expected:
        raise SystemExit(
            f"this interpreter imports scpermut from {folder}, not from the repository at hand ({expected}); "
            f"install it with `pip install --no-deps -e {repo}` in the benchmark environment."
        )
    return folder


def code_fingerprints(package: Path, bench: Path = HERE) -> dict[str, str]:
    """The fingerprints a key may need: scpermut's package, the method code and the split code."""
    return {
        "scpermut_package": closure_fingerprint(package),
        "scpermut_tune": closure_fingerprint(package, TUNE_ROOTS),
        "benchmark_methods": files_fingerprint(METHOD_CODE, bench),
        "benchmark_splits": files_fingerprint(SPLIT_CODE, bench),
    }


def canonical(value) -> str:
    """One JSON text for equal contents: sorted keys, no spacing choices, tuples as lists."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def split_key(split_fields: dict, dataset_digest: str, code: dict[str, str]) -> dict:
    """What decides a split file: its definition, the dataset's bytes and the code that cuts it."""
    return {"split": split_fields, "dataset_sha256": dataset_digest, "code": code["benchmark_splits"]}


def run_key(function: str, settings: dict, seeds, split_keys: list[dict], threads: int, code: dict[str, str], versions: dict[str, str]) -> dict:
    """What decides a method run's results (see the module docstring)."""
    used = {"benchmark_methods": code["benchmark_methods"]}
    if function in USES_PACKAGE:
        used["scpermut_package"] = code["scpermut_tune" if settings.get("tune") else "scpermut_package"]
    return {
        "method": function,
        "settings": json.loads(canonical(settings)),
        "seeds": list(seeds),
        "threads": threads,
        "splits": split_keys,
        "code": used,
        "versions": versions,
    }


def key_digest(key: dict) -> str:
    return digest_bytes(canonical(key).encode())


def is_current(folder: Path, key: dict, expected_files) -> bool:
    """True when ``folder`` holds a finished result stored under exactly ``key`` with every expected file."""
    stored = folder / KEY_FILE
    if not stored.is_file():
        return False
    try:
        recorded = json.loads(stored.read_text())
    except ValueError:
        return False
    return recorded.get("digest") == key_digest(key) and all((folder / name).is_file() for name in expected_files)


def clear_stale(folder: Path) -> bool:
    """Delete a result folder that is not current; return whether there was one."""
    if folder.exists():
        shutil.rmtree(folder)
        return True
    return False


def mark_current(folder: Path, key: dict) -> None:
    """Record ``key`` for a finished result: written last, so an interrupted run is never taken as finished."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (KEY_FILE + ".tmp")
    tmp.write_text(json.dumps({"digest": key_digest(key), "key": key}, indent=2, sort_keys=True, default=str))
    tmp.replace(folder / KEY_FILE)


def key_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted names of the fields that differ between two keys (to say why a result is recomputed)."""
    if isinstance(old, dict) and isinstance(new, dict):
        names = []
        for name in sorted(set(old) | set(new)):
            names += key_differences(old.get(name), new.get(name), f"{prefix}{name}.")
        return names
    return [] if canonical(old) == canonical(new) else [prefix.rstrip(".")]


def stored_key(folder: Path) -> dict | None:
    try:
        return json.loads((folder / KEY_FILE).read_text())["key"]
    except (OSError, ValueError, KeyError):
        return None
