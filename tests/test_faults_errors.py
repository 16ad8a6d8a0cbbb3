"""Issue 16: "please report it if it looks like a bug" only for what looks like a bug. Errors
of the machine or the person (disk, memory, permissions, a missing file, a damaged
checkpoint) get their own message and remedy."""

from __future__ import annotations

import errno
import os
import pickle

import pytest

from workbench.train.faults import classify, looks_damaged
from workbench.rundir import RunDir


@pytest.fixture
def run(tmp_path):
    return RunDir.create(tmp_path / "runs", "demo")


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:  # noqa: BLE001 - a raised one carries its context
        return caught


@pytest.mark.parametrize("exc, kind, says", [
    (OSError(errno.ENOSPC, "No space left on device"), "disk", "disk full"),
    (MemoryError(), "memory", "ran out of memory (RAM"),
    (PermissionError(errno.EACCES, "Permission denied", "/data/train.jsonl"), "permission",
     "/data/train.jsonl"),
    (OSError(errno.EROFS, "Read-only file system", "/runs/x"), "permission", "read-only"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/data/gone.jsonl"),
     "missing_file", "/data/gone.jsonl"),
], ids=["disk", "memory", "permission", "read-only", "missing-file"])
def test_the_machines_errors_get_their_own_message_and_remedy(run, exc, kind, says):
    fault = classify(_raised(exc), run)
    assert fault is not None and fault.kind == kind
    assert says in fault.message
    assert f"workbench resume {run.name}" in fault.hint and "report" not in fault.hint


def test_a_damaged_checkpoint_while_loading_names_it(run):
    class SafetensorError(Exception):  # the name safetensors' Rust error has
        pass

    exc = _raised(SafetensorError("Error while deserializing header: incomplete metadata"))
    assert looks_damaged(exc) and looks_damaged(_raised(pickle.UnpicklingError("invalid load key")))
    fault = classify(exc, run, loading_checkpoint=str(run.checkpoints_dir / "checkpoint-200"))
    assert fault.kind == "checkpoint" and "checkpoint-200 is damaged" in fault.message
    assert "--from checkpoint-N" in fault.hint
    # the same error with no checkpoint being loaded is not blamed on one
    assert classify(exc, run) is None


def test_bugs_still_get_the_crash_hint(run):
    assert classify(_raised(TypeError("unsupported operand")), run) is None
    assert classify(_raised(KeyError("input_ids")), run) is None
    # an OSError that is none of the above (e.g. a network filesystem's EIO) is not hidden
    assert classify(_raised(OSError(errno.EIO, os.strerror(errno.EIO))), run) is None
