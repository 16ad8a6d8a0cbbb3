"""Which failures are the machine's or the person's, and what to say about each.

Why: every exception the runner did not expect used to end with "please report it if it looks
like a bug", a full disk and a deleted data file included. Those are not bugs: each gets its
own message and remedy here, and the crash hint is kept for what is left (real bugs).
"""

from __future__ import annotations

import errno
import pickle
from dataclasses import dataclass
from pathlib import Path

from workbench.train.diskspace import disk_full_report, exception_chain, is_disk_full

# Texts with which torch / safetensors / json say "this file is not what it should be".
_DAMAGED_TEXTS = ("pytorchstreamreader", "incomplete metadata", "error while deserializing",
                  "invalid load key", "failed finding central directory", "unexpected eof",
                  "ran out of input", "header too large", "invalid header")


@dataclass
class Fault:
    kind: str      # "disk", "memory", "permission", "missing_file", "checkpoint"
    message: str
    hint: str


def looks_damaged(exc: BaseException) -> bool:
    """A file that does not deserialize: safetensors, torch's zip, pickle, json."""
    for e in exception_chain(exc):
        name = type(e).__name__
        if name in ("SafetensorError", "UnpicklingError", "JSONDecodeError") or \
                isinstance(e, (pickle.UnpicklingError, EOFError)):
            return True
        if any(t in str(e).lower() for t in _DAMAGED_TEXTS):
            return True
    return False


def classify(exc: BaseException, run, loading_checkpoint: str | None = None,
             estimate: int | None = None) -> Fault | None:
    """A Fault for errors of the machine or the person; None for what looks like a bug.
    `loading_checkpoint`: the checkpoint being loaded when it happened (resume, before the
    first step), so a file that does not deserialize is blamed on it."""
    if is_disk_full(exc, run.path):
        message, hint = disk_full_report(run, exc, estimate)
        return Fault("disk", message, hint)
    if loading_checkpoint and looks_damaged(exc):
        name = Path(loading_checkpoint).name
        return Fault("checkpoint",
                     f"{loading_checkpoint} is damaged and could not be loaded: "
                     f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                     f"resume from an older checkpoint: `workbench resume {run.name} --from "
                     f"checkpoint-N` (older than {name}); `workbench runs` lists damaged ones")
    for e in exception_chain(exc):
        if isinstance(e, MemoryError):
            return Fault("memory", "the machine ran out of memory (RAM, not the GPU's)",
                         "close other programs, lower train.batch_size or train.max_seq_len, "
                         "or use a machine with more memory; then `workbench resume "
                         f"{run.name}`")
        if isinstance(e, PermissionError) or (isinstance(e, OSError) and e.errno in
                                              (errno.EACCES, errno.EPERM, errno.EROFS)):
            where = e.filename or "a file the run needs"
            what = "is read-only" if e.errno == errno.EROFS else "may not be written or read"
            return Fault("permission", f"permission denied: {where} {what} ({e.strerror})",
                         f"fix the permissions of {where} (or run from a folder you own), "
                         f"then `workbench resume {run.name}`")
        if isinstance(e, FileNotFoundError) and e.filename:
            return Fault("missing_file", f"a file the run needs is gone: {e.filename}",
                         f"restore {e.filename} (was it moved or deleted while the run was going?),"
                         f" then `workbench resume {run.name}`")
    return None
