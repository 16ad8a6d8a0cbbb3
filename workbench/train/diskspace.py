"""Disk space: the check before a run starts, and a full disk during one told as such.

Why: on a rented GPU box models, checkpoints and caches share one volume, and a full disk was
the most common way to lose a run: a traceback from whichever write came first, `status.json`
left saying `running`. Here a full disk is recognised however the library reports it (errno
28, safetensors' "os error 28", torch's "unexpected pos" from its zip writer), the run ends
`failed` with what was full and what to do, and a small reserve file kept in the run folder is
given back first so that this last status can still be written.

No torch here: the pre-flight runs in `workbench run` before anything heavy is imported.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path

from workbench.fmt import fmt_bytes

# Given back when the disk fills so the final status.json, error event and log line fit.
RESERVE_BYTES = 256 * 1024
RESERVE_NAME = ".disk-reserve"
# A checkpoint holds the adapter (fp32: 4 bytes a trainable parameter) and AdamW's two
# moments (8 bytes); measured on the demo: 348,208 + 714,895 bytes for 86,016 parameters.
CHECKPOINT_BYTES_PER_PARAM = 12
ADAPTER_BYTES_PER_PARAM = 4
# rng / scheduler / trainer state / training args / README, and the report files.
CHECKPOINT_OVERHEAD = 256 * 1024
REPORT_BYTES = 2 * 1024 * 1024
# "Tight": less than this many times what is needed leaves no room for anything else.
TIGHT_FACTOR = 1.5
# torch's zip writer reports a full disk without an errno; these texts mean "a write failed".
_WRITE_FAILED_TEXTS = ("unexpected pos", "file write failed", "iostream error")
_DISK_FULL_TEXTS = ("no space left on device", "os error 28", "storagefull", "errno 28",
                    "disk quota exceeded", "os error 122")


def existing_ancestor(path: Path | str) -> Path:
    """The path itself, or the nearest folder above it that exists (a run folder not yet
    created lives on its parent's filesystem)."""
    path = Path(path).expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: Path | str) -> int:
    """Bytes an unprivileged writer may still use on the filesystem holding `path`."""
    st = os.statvfs(existing_ancestor(path))
    return st.f_bavail * st.f_frsize


def mount_point(path: Path | str) -> Path:
    path = existing_ancestor(path).resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def exception_chain(exc: BaseException):
    """`exc` and every exception it was raised from or during (cycle-safe)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_disk_full(exc: BaseException, path: Path | str | None = None) -> bool:
    """Whether an exception means the disk (or the quota) is full. torch's writer says only
    that a write failed; that counts as a full disk when `path`'s filesystem is nearly full."""
    write_failed = False
    for e in exception_chain(exc):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(e).lower()
        if any(t in text for t in _DISK_FULL_TEXTS):
            return True
        write_failed = write_failed or any(t in text for t in _WRITE_FAILED_TEXTS)
    if write_failed and path is not None:
        try:
            return free_bytes(path) < 64 * 1024 * 1024
        except OSError:
            return False
    return False


# ---- the reserve ------------------------------------------------------------------------------

class Reserve:
    """A file of real (not sparse) bytes in the run folder, deleted when the disk fills so the
    run's last words fit. Best effort: on a disk already too full there is no reserve."""

    def __init__(self, folder: Path, size: int = RESERVE_BYTES):
        self.path = Path(folder) / RESERVE_NAME
        self.size = size
        self.held = False

    def take(self) -> bool:
        try:
            with open(self.path, "wb") as fh:
                fh.write(b"\0" * self.size)  # written, so the blocks are really allocated
                fh.flush()
                os.fsync(fh.fileno())
            self.held = True
        except OSError:
            self.release()
        return self.held

    def release(self) -> None:
        try:
            self.path.unlink()
        except OSError:
            pass
        self.held = False


# ---- what is being written --------------------------------------------------------------------

@dataclass
class Site:
    what: str          # "checkpoint-200", "the adapter", "the evaluation report"
    need: int | None   # bytes it needs, when known


_sites: list[Site] = []


class writing:
    """`with writing("checkpoint-200", need=...):` names the write under way, so a full disk
    reported from deep inside a library can say what it was writing and how much it needed."""

    def __init__(self, what: str, need: int | None = None):
        self.site = Site(what, need)

    def __enter__(self) -> Site:
        _sites.append(self.site)
        return self.site

    def __exit__(self, exc_type, exc, tb) -> None:
        _sites.remove(self.site)
        if exc is not None and not hasattr(exc, "workbench_site"):
            try:  # the innermost site wins: it is the write that failed
                exc.workbench_site = self.site
            except AttributeError:  # an exception type that takes no attributes
                pass


def failed_site(exc: BaseException) -> Site | None:
    """The write under way when `exc` was raised (set as it left a `writing` block)."""
    for e in exception_chain(exc):
        site = getattr(e, "workbench_site", None)
        if site is not None:
            return site
    return _sites[-1] if _sites else None


def folder_bytes(path: Path) -> int:
    """Bytes in a folder (or a single file); 0 for what is not there."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    total = 0
    for p in Path(path).rglob("*"):
        try:
            if p.is_file():
                total += p.stat().st_size
        except OSError:
            pass
    return total


def disk_full_report(run, exc: BaseException, estimate: int | None = None) -> tuple[str, str]:
    """(message, hint) for a run stopped by a full disk: which filesystem, how much the write
    needed, the last complete checkpoint and what to do."""
    site = failed_site(exc)
    target = Path(getattr(exc, "filename", None) or run.path)
    fs = mount_point(target)
    try:
        free = fmt_bytes(free_bytes(target))
    except OSError:
        free = "n/a"
    need = site.need if site and site.need else estimate
    what = site.what if site else "the run's files"
    last = run.last_checkpoint()
    last_text = (f"the last complete checkpoint is {last.name}" if last
                 else "there is no complete checkpoint yet")
    message = (f"disk full: the filesystem at {fs} has no space left ({free} free) while writing "
               f"{what}" + (f", which needs about {fmt_bytes(need)}" if need else "")
               + f"; {last_text}; nothing partial was kept as complete")
    remedy = (f"free space on {fs}" + (f" (at least {fmt_bytes(need)})" if need else "")
              + f", then `workbench resume {run.name}`")
    if site and site.what == "the evaluation report":
        remedy = (f"the adapter is complete in {run.adapter_dir}; free space on {fs}, then "
                  f"`workbench eval {run.name}` writes the report")
    return message, remedy


def clean_partials(run) -> None:
    """Half-written checkpoints and adapters are never used; on a full disk they also hold
    the space the final status needs."""
    import shutil

    if run.checkpoints_dir.is_dir():
        for child in run.checkpoints_dir.iterdir():
            if child.name.startswith(".staging-"):
                shutil.rmtree(child, ignore_errors=True)
    shutil.rmtree(run.path / ".adapter.partial", ignore_errors=True)


# ---- the pre-flight ---------------------------------------------------------------------------

@dataclass
class Need:
    where: Path   # a folder on the filesystem that must hold it
    bytes: int
    what: str


@dataclass
class Preflight:
    level: str                      # "ok", "tight" or "refuse"
    lines: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "\n".join(self.lines)


def checkpoint_bytes(trainable_params: int) -> int:
    return trainable_params * CHECKPOINT_BYTES_PER_PARAM + CHECKPOINT_OVERHEAD


def space_needs(profile, runs_dir: Path, trainable_params: int, total_params: int | None = None,
                model_bytes_to_download: int = 0, cache: Path | None = None) -> list[Need]:
    """What a run will write: save_total_limit checkpoints plus the one being written before
    the oldest is rotated away, the final adapter and the report; and the model in the
    Hugging Face cache when it is still to be downloaded."""
    kept = profile.train.save_total_limit + 1
    ckpt = checkpoint_bytes(trainable_params)
    run_bytes = kept * ckpt + trainable_params * ADAPTER_BYTES_PER_PARAM + REPORT_BYTES
    needs = [Need(Path(runs_dir), run_bytes,
                  f"{kept} checkpoints of ~{fmt_bytes(ckpt)} (save_total_limit "
                  f"{profile.train.save_total_limit} + the one being written), the adapter "
                  f"and the report")]
    if model_bytes_to_download and cache is not None:
        needs.append(Need(cache, model_bytes_to_download,
                          f"the model {profile.model.name_or_path} (not downloaded yet)"))
    return needs


def preflight(needs: list[Need], free=free_bytes) -> Preflight:
    """Needs that share a filesystem add up. Refuse when they cannot fit; "tight" when they
    fit with less than half as much again to spare."""
    by_fs: dict[Path, list[Need]] = {}
    for need in needs:
        by_fs.setdefault(mount_point(need.where), []).append(need)
    result = Preflight("ok")
    for fs, group in by_fs.items():
        total = sum(n.bytes for n in group)
        have = free(group[0].where)
        parts = " + ".join(f"{fmt_bytes(n.bytes)} for {n.what}" for n in group)
        if have < total:
            result.level = "refuse"
            result.lines.append(f"not enough disk space on {fs}: {fmt_bytes(have)} free, the "
                                f"run needs about {fmt_bytes(total)} ({parts})")
        elif have < total * TIGHT_FACTOR:
            if result.level == "ok":
                result.level = "tight"
            result.lines.append(f"disk space is tight on {fs}: {fmt_bytes(have)} free, the run "
                                f"needs about {fmt_bytes(total)} ({parts})")
    return result


def plan_needs(plan, runs_dir: Path) -> list[Need]:
    """The needs of a planned run, from the memory model's parameter counts (no torch)."""
    from workbench import hub
    from workbench.estimate.config import load_model_config
    from workbench.estimate.memory import EstimateSettings, estimate

    profile = plan.profile
    config, _ = load_model_config(profile.model.name_or_path, profile.model.revision)
    est = estimate(config, EstimateSettings.from_profile(profile))
    download = 0
    ref = profile.model.name_or_path
    if not hub.is_local(ref) and not hub.is_cached(ref, profile.model.revision or "main",
                                                   hub.WEIGHTS):
        download = est.total_params * 2  # bf16 / fp16 weights as published
    return space_needs(profile, runs_dir, est.trainable_params, est.total_params, download,
                       hub.cache_dir())


def resume_check(run, free=free_bytes) -> Preflight:
    """Before a resume: room for the next checkpoint (as big as the last one) and the adapter.
    The usual reason to resume is "free space, then resume": this says whether enough was."""
    last = run.last_checkpoint()
    if last is None:
        return Preflight("ok")
    ckpt = folder_bytes(last)
    adapter = folder_bytes(last / "adapter_model.safetensors")
    return preflight([Need(run.path, ckpt + adapter + REPORT_BYTES,
                           f"the next checkpoint (~{fmt_bytes(ckpt)}, as big as {last.name}), "
                           "the adapter and the report")], free=free)
