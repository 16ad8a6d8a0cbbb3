"""What every export format shares: the error type people see, the checks that a run is
ready to export, and the write-to-a-temporary-folder-then-rename rule.

Pure Python: `workbench/export/cli.py` imports this at start, so no torch here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from workbench.profile import Profile, ProfileError, load_profile
from workbench.rundir import RunDir

FORMATS = ("merged", "bnb4", "gguf", "ollama", "vllm")  # also the order they are built in
GGUF_TYPES = ("f16", "bf16", "f32")  # the full-precision GGUF file types offered


# How each face words a switch: the command line has --force where the app has a "force"
# tick box. A hint names a switch as {force}; `ExportError.hint_for(face)` fills it in.
FACES = ("cli", "app")
SWITCHES = {"cli": {"force": "pass --force"}, "app": {"force": 'tick "force"'}}


class ExportError(Exception):
    """A problem a person can fix (exit 2); `hint` says how (worded for the command line,
    `hint_for("app")` for the app)."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message, self._hint = message, hint

    @property
    def hint(self) -> str:
        return self.hint_for("cli")

    def hint_for(self, face: str) -> str:
        text = self._hint
        for switch, words in SWITCHES[face].items():
            text = text.replace("{" + switch + "}", words)
        return text

    def __str__(self) -> str:
        return self.message + (f"\n  hint: {self.hint}" if self.hint else "")


class ProofFailed(Exception):
    """The merged model does not answer like the adapter model (exit 1): `evidence` says
    where they part."""

    def __init__(self, message: str, evidence: dict):
        super().__init__(message)
        self.evidence = evidence


def export_root(run: RunDir) -> Path:
    return run.path / "export"


def export_dir(run: RunDir, fmt: str) -> Path:
    return export_root(run) / fmt


def model_name(run: RunDir, name: str | None) -> str:
    """A name Ollama and vLLM both accept: lowercase letters, digits, '.', '_', '-'."""
    raw = name or run.name
    clean = re.sub(r"[^a-z0-9._-]+", "-", raw.lower()).strip("-.")
    if not clean:
        raise ExportError(f"--name {raw!r} has no usable characters",
                          hint="use letters, digits, '.', '_' or '-'")
    return clean


def run_profile(run: RunDir) -> Profile:
    try:
        return load_profile(run.profile_path)
    except ProfileError as exc:
        raise ExportError(f"{run.profile_path}: the run's profile does not load\n{exc}") from exc


def adapter_config(run: RunDir) -> dict:
    path = run.adapter_dir / "adapter_config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ExportError(f"{path}: not valid JSON ({exc})",
                          hint="the adapter folder is damaged; retrain or restore it") from exc


def check_adapter_ready(run: RunDir) -> None:
    """The run has a complete final adapter; otherwise say what to do about it."""
    ad = run.adapter_dir
    if (ad / "adapter_config.json").is_file() and any(ad.glob("adapter_model*.safetensors")):
        from workbench.train.checkpoints import adapter_problem  # files vs their manifest
        if problem := adapter_problem(run):
            raise ExportError(*problem)
        return
    status = run.read_status()
    state = run.effective_state(status)
    step = f" (step {status.get('step') or 0}/{status.get('total_steps') or '?'})"
    if state in ("starting", "running"):
        hint = f"wait for it to finish (follow it with `workbench attach {run.name}`)"
        what = f"is still training{step}"
    elif state in ("stopped", "failed", "interrupted"):
        hint = f"finish it with `workbench resume {run.name}`, then export"
        what = f"is {state}{step}"
    else:
        hint = "export a run that finished training"
        what = f"is {state}"
    raise ExportError(f"run {run.name} has no adapter yet: {ad} is missing or incomplete; "
                      f"the run {what}", hint=hint)


def _same_model(a: str, b: str) -> bool:
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return False


def check_base_model(run: RunDir, profile: Profile) -> dict:
    """The adapter was trained on the profile's model: a LoRA merged into another base
    loads without complaint when the shapes agree, and answers nonsense."""
    config = adapter_config(run)
    trained_on = config.get("base_model_name_or_path")
    wanted = profile.model.name_or_path
    if trained_on and not _same_model(str(trained_on), wanted):
        raise ExportError(
            f"the adapter in {run.adapter_dir} was trained on {trained_on!r}, but the run's "
            f"profile names model.name_or_path = {wanted!r}",
            hint="export with the base the adapter was trained on: fix model.name_or_path in "
                 f"{run.profile_path}, or use the run that produced this adapter")
    return config


def check_targets_free(targets: list[Path], force: bool) -> None:
    """Checked for every requested format before any work starts, so a refusal leaves
    the run as it was."""
    taken = [t for t in targets if t.exists()]
    if taken and not force:
        listed = ", ".join(str(t) for t in taken)
        raise ExportError(f"export folder already exists: {listed}",
                          hint="{force} to replace it, or move it away first")


@contextmanager
def staged_dir(target: Path, force: bool = False) -> Iterator[Path]:
    """Yield an empty temporary sibling of `target`; when the block completes, rename it to
    `target` (replacing an old one only with `force`). On any exception the temporary folder
    is removed, so a failure leaves nothing half-written and the old export untouched."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        if target.exists():
            if not force:
                raise ExportError(f"export folder already exists: {target}",
                                  hint="{force} to replace it")
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        # An empty export/ left by a failure would read as "something was exported".
        if target.parent.is_dir() and not any(target.parent.iterdir()):
            target.parent.rmdir()
        raise


def write_text(path: Path, text: str, executable: bool = False) -> None:
    path.write_text(text, encoding="utf-8")
    if executable:
        path.chmod(0o755)
