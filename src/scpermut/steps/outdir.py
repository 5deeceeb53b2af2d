"""The output folder of ``scpermut run`` and ``label``: locked, built aside, published at once.

A run takes ``OUTDIR/.scpermut.lock`` (a second run into the same folder stops, naming the
holder), builds its step folders in ``OUTDIR/.scpermut-partial/`` and moves them into place
only when every step succeeded, so a failed run (``--overwrite`` or not) never destroys
earlier results and never mixes with another run. When the input is at fault the partial
folder is removed; when the run is interrupted (SIGINT, SIGKILL, a crash) it is kept, and
``--resume`` continues it: finished steps are reused.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path

from scpermut import constants
from scpermut._atomic import write_json
from scpermut.errors import InputError

log = logging.getLogger(__name__)

LOCK_FILE = ".scpermut.lock"


class RunFolder:
    """``OUTDIR`` for one run: its lock, its partial folder and the publication of its steps.

    Parameters
    ----------
    outdir
        The output folder.
    fingerprint
        The options that shape results, as text: a resumed run must have the same.
    overwrite
        Replace an earlier run's results (kept until this run succeeds).
    resume
        Continue the interrupted run with the same fingerprint, if any.
    model_input
        A model folder the run reads (``--model``): never replaced, even when it is ``OUTDIR/model``.
    """

    def __init__(self, outdir: Path, fingerprint: str, *, overwrite: bool, resume: bool, model_input: Path | None = None):
        self.outdir = Path(outdir)
        self.fingerprint = fingerprint
        self.overwrite = overwrite
        self.resume = resume
        self.model_input = model_input
        self.partial = self.outdir / constants.PARTIAL_FOLDER
        self.final = {name: self.outdir / name for name in constants.RUN_STEP_FOLDERS}
        self.folders = {name: self.partial / name for name in constants.RUN_STEP_FOLDERS}
        self.earlier: list[str] = []  # step folders of an earlier run, replaced on success
        self._created_outdir = False
        self._locked = False

    # -- opening ------------------------------------------------------------------------------

    def open(self) -> None:
        """Check the folder, take its lock and open the partial folder (reused with ``resume``)."""
        self._check_writable()
        self._check_earlier_results()
        self._created_outdir = not self.outdir.exists()
        try:
            self.outdir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(f"{self.outdir}: cannot create the output folder ({error.strerror}); choose another --outdir.") from error
        self._lock()
        try:
            self._open_partial()
        except BaseException:
            self._unlock()
            raise

    def _check_writable(self) -> None:
        """Stop before any work when ``outdir`` cannot be created or written (one sentence)."""
        existing = self.outdir
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise InputError(f"{self.outdir}: cannot be created, {existing} is a file; choose another --outdir.")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise InputError(f"{self.outdir}: cannot write into {existing} (permission denied); choose another --outdir.")

    def _check_earlier_results(self) -> None:
        """Refuse to replace an earlier run's results unless ``overwrite`` (they stay until this run succeeds)."""
        self.earlier = [name for name, folder in self.final.items() if folder.exists() and not self._is_model_input(folder)]
        if self.earlier and not self.overwrite:
            raise InputError(
                f"{self.outdir}: already holds results of an earlier run ({', '.join(self.earlier)}); pass --overwrite to replace them "
                "(they are kept until the new run succeeds) or choose another --outdir."
            )

    def _lock(self) -> None:
        """Take ``OUTDIR/.scpermut.lock``; a live holder stops this run, a dead one's lock is taken over."""
        path = self.outdir / LOCK_FILE
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        for _ in range(2):
            try:
                descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                other = _read_json(path)
                if _alive(other, path):
                    raise InputError(
                        f"{self.outdir}: another scpermut run writes here (process {other.get('pid')} on {other.get('host')}, "
                        f"started {other.get('started')}); wait for it or choose another --outdir."
                    ) from None
                log.warning("%s: taking over the lock of a run that no longer exists (process %s)", self.outdir, other.get("pid"))
                path.unlink(missing_ok=True)
                continue
            with os.fdopen(descriptor, "w") as handle:
                json.dump(holder, handle)
            self._locked = True
            return
        raise InputError(f"{self.outdir}: cannot take the folder's lock {path}; remove it if no run is writing here.")

    def _unlock(self) -> None:
        if self._locked:
            (self.outdir / LOCK_FILE).unlink(missing_ok=True)
            self._locked = False

    def _open_partial(self) -> None:
        if self.partial.exists():
            done = self._done()
            if self.resume and done.get("options") == self.fingerprint:
                log.info("resuming the interrupted run in %s (finished: %s)", self.outdir, ", ".join(done.get("steps", [])) or "none")
                return
            if self.resume:
                log.warning("the interrupted run in %s used other options; starting again", self.outdir)
            else:
                log.warning("discarding the interrupted run in %s (pass --resume to continue one)", self.outdir)
            shutil.rmtree(self.partial)
        elif self.resume:
            log.info("no interrupted run in %s: starting a new one", self.outdir)
        self.partial.mkdir()
        write_json(self.partial / constants.RUN_DONE_FILE, {"options": self.fingerprint, "steps": []})

    # -- steps --------------------------------------------------------------------------------

    def _done(self) -> dict:
        return _read_json(self.partial / constants.RUN_DONE_FILE)

    def finished_steps(self) -> set[str]:
        """The steps an interrupted run finished (empty for a new run)."""
        return set(self._done().get("steps", []))

    def mark_done(self, step: str) -> None:
        done = self._done()
        write_json(self.partial / constants.RUN_DONE_FILE, {**done, "steps": [*done.get("steps", []), step]})

    def published(self, path: Path) -> Path:
        """Where ``path``, built in the partial folder, will be once the run succeeded."""
        path = Path(path)
        return self.outdir / path.relative_to(self.partial) if path.is_relative_to(self.partial) else path

    # -- closing ------------------------------------------------------------------------------

    def discard(self) -> None:
        """The input was at fault: remove this run's outputs (and ``outdir`` if the run made it) and the lock."""
        shutil.rmtree(self.partial, ignore_errors=True)
        self._unlock()
        if self._created_outdir and self.outdir.is_dir() and not any(self.outdir.iterdir()):
            self.outdir.rmdir()

    def keep_for_resume(self) -> None:
        """The run was interrupted: keep its finished steps for ``--resume``, release the lock."""
        self._unlock()

    def publish(self) -> None:
        """Move the finished step folders into place, each replacing the earlier one, then drop the partial folder."""
        for name, target in self.final.items():
            built = self.partial / name
            if not built.exists():
                continue
            if target.exists() and not self._is_model_input(target):
                os.replace(target, self.partial / f"{name}.replaced")
            os.replace(built, target)
        shutil.rmtree(self.partial)
        self._unlock()

    def _is_model_input(self, folder: Path) -> bool:
        return self.model_input is not None and folder.resolve() == Path(self.model_input).resolve()


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _alive(holder: dict, path: Path) -> bool:
    """True when the lock's holder may still run: another host, a live process on this one, or a
    lock so new that its holder has not written it yet."""
    if not holder:
        try:
            return time.time() - path.stat().st_mtime < 30
        except OSError:
            return False
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder.get("pid", -1)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError):
        return isinstance(holder.get("pid"), int)
    return True
