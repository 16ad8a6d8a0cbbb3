"""Checkpoints you can trust: a manifest written as a checkpoint is renamed into place, and
the check that reads it back before anything loads the checkpoint.

Why: the rename from `.staging-N` makes a checkpoint appear only once it was completely
written, but a folder can still be damaged later (a killed copy, a full disk while syncing it
elsewhere, a flaky network filesystem, a stray `truncate`). Loading a damaged checkpoint
fails deep inside safetensors or torch with an error nobody can act on, or worse, loads
garbage. The manifest records every file's size and sha256 at the moment the checkpoint was
complete; `verify` compares, and resume falls back to the newest intact checkpoint.

No torch here: `workbench runs` uses the quick check (sizes only) and must stay instant.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "workbench-manifest.json"
MANIFEST_VERSION = 1
# Checkpoints found damaged at resume are moved here (a name resume never lists) rather than
# deleted: the person may want to look at them; `workbench runs` still points at them.
DAMAGED_PREFIX = "damaged-"


class CheckpointError(Exception):
    """A checkpoint named or needed cannot be used; `message` and `hint` are for people."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.kind = "checkpoint"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(folder: Path | str) -> dict:
    """Record every file of a complete checkpoint (or adapter) folder; call it on the staged
    folder just before the rename, so the manifest appears with the checkpoint."""
    folder = Path(folder)
    files = {str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": _sha256(p)}
             for p in _files(folder)}
    manifest = {"version": MANIFEST_VERSION, "files": files}
    path = folder / MANIFEST
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=1, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    return manifest


@dataclass
class Verdict:
    """What a check found. `problems` are sentences naming the file and what is wrong; an
    empty list with `has_manifest` False means "written before manifests existed"."""

    path: Path
    problems: list[str]
    has_manifest: bool = True

    @property
    def intact(self) -> bool:
        return not self.problems

    def describe(self) -> str:
        return "; ".join(self.problems) if self.problems else "intact"


def verify(folder: Path | str, quick: bool = False) -> Verdict:
    """Compare a folder with its manifest: every file present, of its size, and (unless
    `quick`) with its sha256. A folder without a manifest was written by an older workbench:
    it is accepted (nothing to compare with) but says so."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        return Verdict(folder, [f"{folder} is missing"])
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files = manifest["files"]
        if not isinstance(files, dict):
            raise TypeError("files is not a table")
    except FileNotFoundError:
        return Verdict(folder, [], has_manifest=False)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return Verdict(folder, [f"{MANIFEST} is unreadable ({type(exc).__name__}: {exc})"])
    problems = []
    for name, want in files.items():
        file = folder / name
        try:
            size = file.stat().st_size
        except FileNotFoundError:
            problems.append(f"{name} is missing")
            continue
        except OSError as exc:
            problems.append(f"{name} cannot be read ({exc.strerror or exc})")
            continue
        if size != want.get("size"):
            what = "truncated" if size < want.get("size", 0) else "longer than written"
            problems.append(f"{name} is {what}: {size:,} bytes, {want.get('size'):,} when written")
            continue
        if not quick:
            try:
                digest = _sha256(file)
            except OSError as exc:
                problems.append(f"{name} cannot be read ({exc.strerror or exc})")
                continue
            if digest != want.get("sha256"):
                problems.append(f"{name} has changed since it was written (sha256 differs; "
                                "same size, so damaged in place)")
    return Verdict(folder, problems)


def damage(folder: Path | str, quick: bool = False) -> str | None:
    """None when the folder is intact (or predates manifests), else what is wrong: the one
    call `export` and `eval` make before they load an adapter."""
    verdict = verify(folder, quick=quick)
    return None if verdict.intact else verdict.describe()


def damaged_checkpoints(run, quick: bool = True) -> list[tuple[str, str]]:
    """(name, what is wrong) for the run's damaged checkpoints: those a check finds damaged
    now and those resume already moved aside. Quick by default (sizes): `workbench runs`."""
    found = []
    for _step, path in run.checkpoints():
        verdict = verify(path, quick=quick)
        if not verdict.intact:
            found.append((path.name, verdict.describe()))
    if run.checkpoints_dir.is_dir():
        for child in sorted(run.checkpoints_dir.iterdir()):
            if child.name.startswith(DAMAGED_PREFIX) and child.is_dir():
                found.append((child.name, "moved aside by resume"))
    return found


@dataclass
class Choice:
    """The checkpoint resume will load (None: start over) and what the person must be told."""

    path: Path | None
    notes: list[str]


def choose_for_resume(run, requested: str | None = None) -> Choice:
    """The newest intact checkpoint (or the one named with `--from`), verified in full.
    Damaged newer checkpoints are moved aside, with a message saying which file is wrong and
    how many steps the fallback costs. Raises CheckpointError when nothing usable is left."""
    checkpoints = run.checkpoints()  # oldest first
    if requested:
        name = requested if requested.startswith("checkpoint-") else f"checkpoint-{requested}"
        match = [(s, p) for s, p in checkpoints if p.name == name]
        if not match:
            have = ", ".join(p.name for _, p in checkpoints) or "none"
            raise CheckpointError(f"run {run.name} has no complete {name} (its checkpoints: {have})",
                                  hint=f"name one of them: `workbench resume {run.name} --from "
                                       "checkpoint-N`")
        step, path = match[0]
        verdict = verify(path)
        if not verdict.intact:
            raise CheckpointError(f"{path} is damaged: {verdict.describe()}",
                                  hint=_fallback_hint(run, checkpoints, exclude=path))
        newest = checkpoints[-1][0]
        note = f"resuming from {name} as asked"
        if newest > step:
            note += (f"; newer checkpoints (up to checkpoint-{newest}) are replaced as training "
                     f"reaches their steps again")
        return Choice(path, [note + _unverified(verdict)])

    notes: list[str] = []
    damaged: list[tuple[int, Path, str]] = []
    for step, path in reversed(checkpoints):
        verdict = verify(path)
        if not verdict.intact:
            damaged.append((step, path, verdict.describe()))
            continue
        for bad_step, bad_path, what in damaged:
            notes.append(f"{bad_path.name} is damaged: {what}")
        if damaged:
            lost = damaged[0][0] - step
            moved = _move_aside(run, [p for _, p, _ in damaged])
            notes.append(f"resuming from {path.name}, the newest intact checkpoint: "
                         f"{lost} step{'s' if lost != 1 else ''} will be trained again"
                         + (f" (damaged checkpoint{'s' if len(moved) > 1 else ''} kept as "
                            f"{', '.join(moved)})" if moved else ""))
        else:
            notes.append(f"resuming from {path.name}" + _unverified(verdict))
        return Choice(path, notes)
    if damaged:
        listing = "; ".join(f"{p.name}: {what}" for _, p, what in damaged)
        raise CheckpointError(
            f"every checkpoint of {run.name} is damaged ({listing})",
            hint=f"restore the checkpoints folder from a copy, or move {run.checkpoints_dir} "
                 f"aside and `workbench resume {run.name}` starts over")
    return Choice(None, ["no complete checkpoint yet: starting over"])


def _unverified(verdict: Verdict) -> str:
    return "" if verdict.has_manifest else " (written before checkpoint manifests: not verified)"


def _fallback_hint(run, checkpoints, exclude: Path) -> str:
    others = [p.name for _, p in checkpoints if p != exclude]
    if others:
        return (f"`workbench resume {run.name}` picks the newest intact checkpoint, or name "
                f"another with --from (these exist: {', '.join(others)})")
    return "restore it from a copy, or start the run again"


def _move_aside(run, paths: list[Path]) -> list[str]:
    moved = []
    for path in paths:
        target = path.with_name(DAMAGED_PREFIX + path.name)
        n = 2
        while target.exists():
            target = path.with_name(f"{DAMAGED_PREFIX}{path.name}-{n}")
            n += 1
        try:
            os.replace(path, target)
            moved.append(target.name)
        except OSError:
            pass  # left in place: it stays listed as damaged and is never loaded
    return moved


def describe_resume(run, requested: str | None = None) -> str:
    """What `workbench resume` says before the runner starts: the quick check (sizes) here,
    the full one (sha256) when the runner loads it."""
    if requested:
        choice = choose_for_resume(run, requested)  # raises CheckpointError: missing, damaged
        return f"from {choice.path.name} (verified)"
    for _step, path in reversed(run.checkpoints()):
        if verify(path, quick=True).intact:
            return f"from {path.name} (verified before loading)"
    if run.checkpoints():
        return "(its checkpoints look damaged: the runner says which and why)"
    return "from the start (no checkpoint yet)"


def adapter_problem(run) -> tuple[str, str] | None:
    """(message, hint) when the run's final adapter exists but no longer matches its manifest:
    what `export` and `eval` say instead of loading it. None when intact or absent (absent has
    its own message where the adapter is looked for)."""
    if not run.adapter_dir.is_dir():
        return None
    what = damage(run.adapter_dir)
    if what is None:
        return None
    return (f"the adapter of {run.name} is damaged: {what}",
            f"restore {run.adapter_dir} from a copy; each intact checkpoint under "
            f"{run.checkpoints_dir} also holds the adapter as it was at its step")
