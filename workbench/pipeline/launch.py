"""One run on several processes: several GPUs of a box, several boxes, or (to try the path
without GPUs) several CPU processes on gloo. PyTorch's own elastic launcher (torchrun,
`torch.distributed.run`) starts and watches the ranks; DDP, FSDP2 or DeepSpeed ZeRO shard
the work through the settings handed to the Hugging Face trainer. Nothing here launches,
shards or all-reduces on its own beyond a flag or two.

The run folder stays the one contract:
- the launcher process (`python -m workbench.pipeline.launch launch RUN`) is the run's pid:
  `workbench stop` signals it, it forwards the signal to its local ranks, and the ranks agree
  on stopping at the same step (an all-reduce of the stop flag) so the checkpoint is whole;
- rank 0 alone writes status.json, events.jsonl, checkpoints, the adapter and the report;
  other ranks write only their own `ranks/rank-N.json` (pid, device, how they ended);
- when a rank dies (OOM, kill -9, NaN on that rank), torchrun ends the others and the
  launcher marks the run `failed`, naming the rank and why.

Two entry points, both `python -m workbench.pipeline.launch`:
  launch RUN_DIR [--resume]   the launcher (foreground runs call `supervise` in-process)
  rank RUN_DIR [--resume]     what torchrun starts once per rank

No torch import at module level: the command line imports this to plan a launch.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from workbench.rundir import RunDir, iso, pid_alive, write_json_atomic
from workbench.train import ranks
from workbench.train.ranks import (RANKS_DIR, DistributedError, RankRunDir, init_process_group, local_rank,
                                   main_process_first, rank, world_size)

MONITOR_INTERVAL_S = 0.5  # how often torchrun's agent checks its ranks

# ---- the launch: how many processes, which strategy ---------------------------------------

@dataclass
class Launch:
    nproc_per_node: int
    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int
    device: str  # "cpu" (gloo) | "cuda"
    strategy: str  # "ddp" | "fsdp" | "deepspeed"
    zero_stage: int
    cpu_offload: bool
    why: str
    visible_gpus: str = ""  # CUDA_VISIBLE_DEVICES for the ranks ("" = all)

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    def describe(self) -> str:
        where = (f"{self.nproc_per_node} CPU processes (gloo)" if self.device == "cpu"
                 else f"{self.nproc_per_node} GPUs" + (f" ({self.visible_gpus})"
                                                       if self.visible_gpus else ""))
        if self.nnodes > 1:
            where += f" on each of {self.nnodes} machines (this is node {self.node_rank})"
        strategy = (f"deepspeed ZeRO-{self.zero_stage}" if self.strategy == "deepspeed"
                    else self.strategy)
        return (f"distributed: {where}, world size {self.world_size}, {strategy}"
                + (" with cpu_offload" if self.cpu_offload else "") + f" ({self.why})")

    def to_dict(self) -> dict:
        return asdict(self)


def gpu_list(spec: int | str, visible: int) -> list[int]:
    """The CUDA indices a `distributed.gpus` value names, checked against what is there."""
    if spec == "auto":
        return list(range(visible))
    if isinstance(spec, int):
        if spec > visible:
            raise DistributedError(f"distributed.gpus = {spec} but this machine shows {visible} "
                                   "GPU(s); lower it or use \"auto\"")
        return list(range(spec))
    indices = [int(p) for p in str(spec).split(",")]
    missing = [i for i in indices if i >= visible]
    if missing:
        raise DistributedError(f"distributed.gpus = \"{spec}\" names GPU {missing[0]}, but this "
                               f"machine shows GPUs 0..{visible - 1}")
    return indices


def plan_launch(profile, device: str, visible_gpus: int,
                replica_fits: Callable[[], tuple[bool | None, str]] | None = None) -> Launch | None:
    """None for a one-process run (today's path). `replica_fits` answers "does a full
    replica fit each GPU?" for strategy = "auto" (the estimator, see `estimator_fit`)."""
    d = profile.distributed
    if device == "cpu":
        if d.gpus != "auto" and d.gpus != 1:
            raise DistributedError(
                f"distributed.gpus = {json.dumps(d.gpus)} but this run is on the CPU (no CUDA "
                "GPU, or train.device = \"cpu\")",
                hint="use --procs N to try N CPU processes, or run on a machine with GPUs")
        nproc, visible = d.processes, ""
        if nproc == 1 and d.nnodes == 1:
            return None
        if d.strategy in ("fsdp", "deepspeed"):
            raise DistributedError(f"distributed.strategy = \"{d.strategy}\" needs GPUs; CPU "
                                   "processes run DDP on gloo (strategy = \"ddp\" or \"auto\")")
        return Launch(nproc, d.nnodes, d.node_rank, d.master_addr, d.master_port, "cpu", "ddp",
                      d.zero_stage, False, "CPU processes: DDP on gloo (FSDP and DeepSpeed need "
                      "GPUs)")
    gpus = gpu_list(d.gpus, visible_gpus)
    if len(gpus) <= 1 and d.nnodes == 1:
        return None
    visible = ",".join(map(str, gpus)) if gpus != list(range(visible_gpus)) else ""
    strategy, why = d.strategy, f"strategy = \"{d.strategy}\" in the profile"
    if strategy == "auto":
        fits, reason = replica_fits() if replica_fits else (None, "no estimate")
        strategy = "fsdp" if fits is False else "ddp"
        why = reason
    return Launch(len(gpus), d.nnodes, d.node_rank, d.master_addr, d.master_port, "cuda",
                  strategy, d.zero_stage, d.cpu_offload and strategy != "ddp", why, visible)


def estimator_fit(profile, plan) -> tuple[bool | None, str]:
    """The estimator's answer for a full replica against the smallest GPU used."""
    from dataclasses import replace

    try:
        import torch

        from workbench.estimate.config import load_model_config
        from workbench.estimate.memory import EstimateSettings, estimate
        from workbench.estimate.pergpu import choose_strategy

        config, _ = load_model_config(profile.model.name_or_path, profile.model.revision)
        settings = replace(EstimateSettings.from_profile(profile), precision=plan.precision,
                           grad_ckpt=plan.gradient_checkpointing)
        peak = estimate(config, settings).peak_bytes
        available = min(torch.cuda.get_device_properties(i).total_memory
                        for i in range(torch.cuda.device_count()))
    except Exception as exc:  # noqa: BLE001 - an estimate is advice
        return None, f"no estimate ({type(exc).__name__}): DDP"
    strategy, why = choose_strategy(peak, available)
    return strategy == "ddp", why


def torchrun_args(launch: Launch, run_dir: str | Path, resume: bool = False) -> list[str]:
    """Arguments of `torchrun` (torch.distributed.run) for this launch. One node: a
    standalone rendezvous on a free local port. Several: a static rendezvous at node 0's
    master_addr:master_port, this node's rank given."""
    args = [f"--nproc-per-node={launch.nproc_per_node}", "--max-restarts=0",
            f"--monitor-interval={MONITOR_INTERVAL_S}"]
    if launch.nnodes == 1:
        args.append("--standalone")
    else:
        args += [f"--nnodes={launch.nnodes}", f"--node-rank={launch.node_rank}",
                 f"--master-addr={launch.master_addr}", f"--master-port={launch.master_port}"]
    args += ["-m", "workbench.pipeline.launch", "rank", str(run_dir)]
    if resume:
        args.append("--resume")
    return args


def torchrun_command(launch: Launch, run_dir: str | Path, resume: bool = False,
                     python: str | None = None) -> list[str]:
    """The same launch as a command a person can type (`python -m torch.distributed.run`
    is `torchrun`)."""
    return [python or sys.executable, "-m", "torch.distributed.run",
            *torchrun_args(launch, run_dir, resume)]


def read_ranks(run: RunDir) -> dict[int, dict]:
    out = {}
    folder = run.path / RANKS_DIR
    if folder.is_dir():
        for path in folder.glob("rank-*.json"):
            try:
                out[int(path.stem.split("-")[1])] = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError, IndexError):
                continue
    return out


# ---- world size changes on resume ----------------------------------------------------------

def adjusted_grad_accum(batch: int, grad_accum: int, old_world: int, new_world: int) -> tuple[int, str]:
    """Gradient accumulation for `new_world` ranks that keeps the global batch of a run
    started on `old_world` (batch x grad_accum x world). Raises when no integer does."""
    global_batch = batch * grad_accum * old_world
    if new_world == old_world:
        return grad_accum, ""
    if global_batch % (batch * new_world):
        raise DistributedError(
            f"the run's global batch is {global_batch} (batch {batch} x grad_accum {grad_accum} "
            f"x {old_world} processes); {new_world} processes of batch {batch} cannot make it "
            f"up exactly; resume with a world size that divides {global_batch // batch}")
    new = global_batch // (batch * new_world)
    return new, (f"world size {old_world} -> {new_world}: gradient accumulation {grad_accum} "
                 f"-> {new} keeps the global batch of {global_batch}")


# ---- a rank ---------------------------------------------------------------------------------

def rank_main(run_dir: str, resume: bool) -> int:
    """What torchrun runs on every rank: join the group, plan main-process-first, train."""
    from workbench.train.control import run_profile
    from workbench.train.plan import plan_run
    from workbench.rundir import iso as _iso

    run = RankRunDir(Path(run_dir).resolve(), rank())
    status = run.read_status()
    launch = status.get("launch") or {}
    os.environ["WORKBENCH_LAUNCH"] = json.dumps(launch)
    run.write_rank(pid=os.getpid(), rank=rank(), local_rank=local_rank(),
                   world_size=world_size(), host=os.uname().nodename, state="running",
                   started_at=_iso(time.time()))
    init_process_group(launch.get("device", "cpu"))
    from workbench.train.threads import size_torch_threads, usable_cores

    if launch.get("device", "cpu") == "cpu" and not os.environ.get("WORKBENCH_CPU_THREADS"):
        # The ranks of this machine share its cores; each sizing itself alone oversubscribes.
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        os.environ["WORKBENCH_CPU_THREADS"] = str(max(1, usable_cores() // local))

    with open(run.log_path, "a", encoding="utf-8") as fh:
        fh.write(f"rank {rank()}: {size_torch_threads()}\n")
    try:
        with main_process_first():
            plan = plan_run(run_profile(run), log=lambda s: _rank_log(run, s))
    except Exception as exc:  # the world changed since the run was planned (data moved...)
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        run.append_event("error", kind=getattr(exc, "kind", "config"), message=message,
                         hint=getattr(exc, "hint", ""))
        run.write_status(state="failed", message=message, ended_at=_iso(time.time()))
        return 1
    t = plan.profile.train
    accum = status.get("grad_accum_per_rank", t.grad_accum)
    t.grad_accum = accum
    from workbench.pipeline.run import run_pipeline

    state = run_pipeline(run, plan, resume=resume)
    run.write_rank(state=state, ended_at=_iso(time.time()), seen_rows=ranks._SEEN)
    dist = ranks._dist()
    if dist is not None:
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - a peer that already left
            pass
    return 0 if state in ("finished", "stopped") else 1


def _rank_log(run, message: str) -> None:
    """A rank's planning line ("tokenized data from the cache ...") in the run's log."""
    try:
        with open(run.log_path, "a", encoding="utf-8") as fh:
            fh.write(f"rank {rank()}: {message}\n")
    except OSError:
        pass  # a full disk is met, and reported, by the run itself


# ---- the launcher -----------------------------------------------------------------------------

def prepare_launch_status(run: RunDir, launch: Launch, resume: bool) -> str:
    """Record the launch in status.json (ranks read it) and work out the gradient
    accumulation for this world size. Returns a note for the console ("" if none)."""
    from workbench.profile import load_profile

    profile = load_profile(run.profile_path)
    status = run.read_status()
    t = profile.train
    note = ""
    if resume:
        old_world = status.get("world_size") or 1
        old_accum = status.get("grad_accum_per_rank") or t.grad_accum
        accum, note = adjusted_grad_accum(t.batch_size, old_accum, old_world, launch.world_size)
    else:
        accum = t.grad_accum
    run.write_status(launch=launch.to_dict(), world_size=launch.world_size,
                     grad_accum_per_rank=accum, strategy=launch.strategy)
    return note


def _culprit(failures: dict, ranks: dict[int, dict]) -> tuple[int, str]:
    """Which rank ended the run, and why, from torchrun's failures {rank: ProcessFailure}
    and the ranks' own records. A rank killed by a signal it did not ask for (kill -9, the
    OOM killer) first; then a rank that failed on its own (NaN, OOM, a bug); the others
    usually died of losing their peer."""
    def signal_name(code: int) -> str:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"

    killed = [r for r, f in failures.items()
              if f.exitcode < 0 and -f.exitcode != signal.SIGTERM
              and ranks.get(r, {}).get("state", "running") == "running"]
    if killed:
        r = min(killed)
        return r, (f"rank {r} was killed by {signal_name(failures[r].exitcode)} (pid "
                   f"{failures[r].pid}): killed from outside, or by the kernel's out-of-memory "
                   "killer (check `dmesg`)")
    own = [r for r, rec in ranks.items()
           if rec.get("error_kind") and rec.get("error_kind") != "crash"]
    if own:
        r = min(own)
        return r, f"rank {r}: {ranks[r].get('error')}"
    r = min(failures, key=lambda k: (failures[k].timestamp, k))
    f = failures[r]
    detail = ranks.get(r, {}).get("error") or (
        f"exit code {f.exitcode}" if f.exitcode >= 0 else f"killed by {signal_name(f.exitcode)}")
    return r, f"rank {r} failed: {detail}"


def supervise(run: RunDir, launch: Launch, resume: bool = False,
              on_event: Callable[[dict], None] = lambda ev: None) -> int:
    """The launcher: torchrun's agent in a thread (so this process keeps its own signal
    handlers), the run's events followed and handed to `on_event`, stop signals forwarded to
    the local ranks, and the final state written when every rank is gone."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch
    from torch.distributed.run import config_from_args, parse_args

    # Node 0's launcher owns the run folder; another node's launcher (several machines, one
    # shared folder) only keeps its own record and leaves status.json to node 0.
    owner = launch.node_rank == 0
    if owner:
        run.write_status(state="running", pid=os.getpid(), ended_at=None, message=None, hint=None)
    else:
        _write_node(run, launch.node_rank, pid=os.getpid(), host=os.uname().nodename,
                    state="running")
    env_backup = dict(os.environ)
    os.environ["PYTHONUNBUFFERED"] = "1"
    if launch.visible_gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = launch.visible_gpus
    # torchrun's own notices are not for the console: its OMP_NUM_THREADS banner (each rank
    # sizes its own threads, threads.py) and "no signal handlers on a child thread" (this
    # process handles the signals and forwards them to the ranks).
    import logging

    for name in ("torch.distributed.run", "torch.distributed.elastic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1)
                                                     // launch.nproc_per_node)))
    config, cmd, cmd_args = config_from_args(parse_args(torchrun_args(launch, run.path, resume)))
    if launch.nnodes == 1:  # torchrun's `run()` does this for --standalone
        import uuid

        config.rdzv_backend, config.rdzv_endpoint, config.run_id = "c10d", "localhost:0", str(uuid.uuid4())
    outcome: dict[str, Any] = {}

    def agent() -> None:
        try:
            elastic_launch(config=config, entrypoint=cmd)(*cmd_args)
            outcome["ok"] = True
        except ChildFailedError as exc:
            outcome["failures"] = exc.failures
        except BaseException as exc:  # noqa: BLE001 - rendezvous, ports...: reported below
            outcome["error"] = exc

    signals = {"count": 0, "hung_up": False}

    def forward(signum, frame):
        if signum == signal.SIGHUP:
            # The terminal went away: the run goes on (as a one-process run does by default,
            # console.Hangup); the ranks, in their own sessions, never saw it. Only the
            # printing stops; events.jsonl keeps everything (`workbench attach`).
            signals["hung_up"] = True
            return
        signals["count"] += 1
        for rec in _local_ranks(run):
            pid = rec.get("pid")
            if pid and pid_alive(pid) and rec.get("state") == "running":
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    thread = threading.Thread(target=agent, name="torchrun-agent", daemon=True)
    offset = run.events_path.stat().st_size if run.events_path.exists() else 0
    try:
        thread.start()
        while thread.is_alive():
            thread.join(0.5)
            events, offset = run.read_events(offset)
            for ev in events:
                if not signals["hung_up"]:
                    on_event(ev)
        events, offset = run.read_events(offset)
        for ev in events:
            if not signals["hung_up"]:
                on_event(ev)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        os.environ.clear()
        os.environ.update(env_backup)
    _wait_for_ranks(run)
    if not owner:
        ok = bool(outcome.get("ok"))
        _write_node(run, launch.node_rank, state="finished" if ok else "failed",
                    outcome=repr(outcome.get("failures") or outcome.get("error") or ""))
        return 0 if ok else 1
    return _final_state(run, outcome, (lambda ev: None) if signals["hung_up"] else on_event)


def _write_node(run: RunDir, node_rank: int, **fields) -> None:
    path = run.path / RANKS_DIR / f"node-{node_rank}.json"
    path.parent.mkdir(exist_ok=True)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    record.update(fields, updated_at=iso(time.time()))
    write_json_atomic(path, record)


def _local_ranks(run: RunDir) -> list[dict]:
    """The ranks of this machine (pids mean nothing on another host)."""
    here = os.uname().nodename
    return [rec for rec in read_ranks(run).values() if rec.get("host", here) == here]


def _wait_for_ranks(run: RunDir, timeout_s: float = 45.0) -> None:
    """torchrun's agent has already stopped the ranks (SIGTERM, then SIGKILL after 30 s);
    this only makes sure no rank outlives the launcher."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        alive = [rec["pid"] for rec in _local_ranks(run)
                 if rec.get("pid") and pid_alive(rec["pid"])]
        if not alive:
            return
        time.sleep(0.2)
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _final_state(run: RunDir, outcome: dict, on_event: Callable[[dict], None]) -> int:
    status = run.read_status()
    state = status.get("state")

    def fail(message: str, hint: str, kind: str = "rank") -> int:
        on_event(run.append_event("error", kind=kind, message=message, hint=hint))
        run.write_status(state="failed", message=message, hint=hint, ended_at=iso(time.time()),
                         failed_rank=rank_failed)
        on_event(run.append_event("status", state="failed", message=message))
        return 1

    rank_failed = None
    if outcome.get("ok"):
        if state in ("finished", "stopped"):
            return 0
        return fail(f"every rank exited, but rank 0 left the run {state!r}",
                    f"see {run.log_path}", kind="crash")
    if "failures" in outcome:
        rank_failed, message = _culprit(outcome["failures"], read_ranks(run))
        hint = read_ranks(run).get(rank_failed, {}).get("hint") or ""
        return fail(message, hint or f"every rank's output is in {run.log_path}; "
                    f"`workbench resume {run.name}` continues from the last checkpoint")
    exc = outcome.get("error")
    return fail(f"the launcher failed: {type(exc).__name__}: {exc}",
                "a port in use or an unreachable master_addr are the usual causes; see "
                f"{run.log_path}", kind="launch")


def spawn_detached_launch(run: RunDir, resume: bool = False) -> int:
    """`--detach` for a distributed run: the launcher in its own session (like the
    single-process worker, control.spawn_detached)."""
    import subprocess

    # --background: lower the CPU priority as a detached worker does (worker.lower_priority).
    cmd = [sys.executable, "-m", "workbench.pipeline.launch", "launch", str(run.path),
           "--background"]
    if resume:
        cmd.append("--resume")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(run.log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, env=env)
    run.write_status(pid=proc.pid)
    return proc.pid


def launch_from_status(run: RunDir) -> Launch:
    raw = run.read_status().get("launch")
    if not raw:
        raise DistributedError(f"{run.name} has no recorded launch")
    return Launch(**raw)


def prepare(profile_ref: str, overrides: list[str], runs_dir: str | None) -> RunDir:
    """Plan a profile and create its run folder with the launch recorded, without starting
    it: the first step of a cluster job (launch_script.py), run once on the first node; the
    launchers of every node then start from the folder."""
    from workbench.profile import load_profile
    from workbench.train.control import create_run
    from workbench.train.plan import plan_run

    profile = load_profile(profile_ref, overrides)
    plan = plan_run(profile)
    d = profile.distributed
    if plan.device == "cuda":
        import torch

        nproc = len(gpu_list(d.gpus, torch.cuda.device_count()))
    else:
        nproc = d.processes
    strategy, why = d.strategy, f"strategy = \"{d.strategy}\" in the profile"
    if strategy == "auto":
        fits, why = estimator_fit(profile, plan) if plan.device == "cuda" else (True, "CPU: DDP")
        strategy = "fsdp" if fits is False else "ddp"
    launch = Launch(nproc, d.nnodes, 0, d.master_addr, d.master_port, plan.device, strategy,
                    d.zero_stage, d.cpu_offload and strategy != "ddp", why)
    run = create_run(plan, Path(runs_dir) if runs_dir else None)
    prepare_launch_status(run, launch, resume=False)
    run.append_event("status", state="starting", message=launch.describe())
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.pipeline.launch")
    parser.add_argument("role", choices=("launch", "rank", "prepare"))
    parser.add_argument("target", metavar="RUN_DIR|PROFILE")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--node-rank", type=int, help="launch: this machine's rank")
    parser.add_argument("--master-addr", help="launch: node 0's address (default: the run's)")
    parser.add_argument("--master-port", type=int)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--runs-dir")
    parser.add_argument("--background", action="store_true",
                        help="launch: a detached run; lower its CPU priority (ranks inherit it)")
    args = parser.parse_args(argv)
    if args.background:
        from workbench.pipeline.worker import lower_priority

        lower_priority()
    if args.role == "rank":
        return rank_main(args.target, args.resume)
    if args.role == "prepare":
        print(prepare(args.target, args.overrides, args.runs_dir).path)
        return 0
    from workbench.pipeline.console import ProgressPrinter

    run = RunDir(Path(args.target).resolve())
    launch = launch_from_status(run)
    for field_, value in (("node_rank", args.node_rank), ("master_addr", args.master_addr),
                          ("master_port", args.master_port)):
        if value is not None:
            setattr(launch, field_, value)
    if launch.node_rank == 0:
        run.write_status(pid=os.getpid())
    printer = ProgressPrinter(sys.stdout, live=False)
    code = supervise(run, launch, resume=args.resume,
                     on_event=printer.handle if launch.node_rank == 0 else (lambda ev: None))
    printer.close()
    return code


if __name__ == "__main__":
    # Run through the importable module, not this `__main__` copy: the trainer imports
    # workbench.pipeline.launch, and both must share one module state (ranks._SEEN).
    from workbench.pipeline.launch import main as _main

    sys.exit(_main())


# ---- the command line's side ------------------------------------------------------------------

class _SetKey(argparse.Action):
    """`--gpus 4` is `--set distributed.gpus=4`: one path for validation and messages."""

    def __init__(self, *args, key: str, **kwargs):
        self.key = key
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        value = values if values.isdigit() or values == "" else json.dumps(values)
        overrides = list(getattr(namespace, "overrides", None) or [])
        overrides.append(f"{self.key}={value}")
        namespace.overrides = overrides


def add_world_flags(p: argparse.ArgumentParser) -> None:
    """`run`: --gpus, --procs, --node-rank (profile overrides)."""
    p.add_argument("--gpus", action=_SetKey, key="distributed.gpus", metavar="N|auto|0,3,5",
                   help="GPUs for this run, one process each (torchrun); same as "
                        "--set distributed.gpus=N")
    p.add_argument("--procs", action=_SetKey, key="distributed.processes", metavar="N",
                   help="without GPUs: N CPU processes on gloo (to try the distributed path)")
    p.add_argument("--node-rank", action=_SetKey, key="distributed.node_rank", metavar="R",
                   help="several machines: this machine's rank (0 on the one at master_addr)")


def add_resume_flags(p: argparse.ArgumentParser) -> None:
    """`resume`: continue on a different number of processes or GPUs."""
    p.add_argument("--procs", type=int, metavar="N", help="resume on N CPU processes")
    p.add_argument("--gpus", type=int, metavar="N", help="resume on N GPUs")


def launch_for_plan(plan) -> Launch | None:
    """The launch of a planned run (None: one process, today's path). Visible GPUs counted
    by torch, already imported by planning."""
    visible = 0
    if plan.device == "cuda":
        import torch

        visible = torch.cuda.device_count()
    return plan_launch(plan.profile, plan.device, visible,
                       replica_fits=lambda: estimator_fit(plan.profile, plan))


def start(run: RunDir, launch: Launch, detach: bool, printer=None, resume: bool = False) -> int:
    """Start a planned distributed run: record the launch, then supervise it here or in a
    detached launcher. Returns the exit code for the command line."""
    note = prepare_launch_status(run, launch, resume)
    print(launch.describe(), flush=True)
    if note:
        print(note, flush=True)
    run.append_event("status", state="starting", message=launch.describe())
    if note:
        run.append_event("status", state="starting", message=note)
    print("  torchrun: " + " ".join(torchrun_args(launch, run.path, resume)), flush=True)
    if detach:
        pid = spawn_detached_launch(run, resume=resume)
        print(f"started {run.name} in the background (launcher pid {pid})")
        print(f"  follow:  workbench attach {run.name}")
        print(f"  stop:    workbench stop {run.name}")
        print(f"  folder:  {run.path}")
        return 0
    print(f"run folder: {run.path}", flush=True)

    def on_event(ev: dict) -> None:
        if printer is None:
            return
        if ev.get("type") == "log":  # total steps are known only once the trainer starts
            printer.total_steps = run.read_status().get("total_steps") or printer.total_steps
        printer.handle(ev)

    return supervise(run, launch, resume=resume, on_event=on_event)


def resume_launch(run: RunDir, procs: int | None, gpus: int | None) -> Launch | None:
    """The launch a resume uses: the run's own, or another world size asked for with
    --procs / --gpus. None: one process (the single-process resume path)."""
    status = run.read_status()
    old = status.get("launch")
    if procs is None and gpus is None:
        return Launch(**old) if old else None
    n = procs if procs is not None else gpus
    if n < 1:
        raise DistributedError(f"--procs / --gpus must be at least 1, got {n}")
    base = dict(old) if old else {
        "nnodes": 1, "node_rank": 0, "master_addr": "127.0.0.1", "master_port": 29500,
        "device": status.get("device") or "cpu", "strategy": "ddp", "zero_stage": 3,
        "cpu_offload": False, "why": "resumed on more processes", "visible_gpus": ""}
    if procs is not None:
        base["device"] = "cpu"
    base["nproc_per_node"] = n
    base["why"] = f"resumed on {n} process(es)"
    launch = Launch(**base)
    return launch


def find_node0_run(profile, runs_dir: Path, launch: Launch, timeout_s: float = 600.0,
                   poll_s: float = 1.0) -> RunDir:
    """Another machine of a several-machine run (node_rank > 0): the run folder node 0
    created for the same profile and rendezvous, in the shared runs folder. Waits for it
    (the nodes are started by hand, in any order)."""
    from workbench.rundir import list_runs

    deadline = time.time() + timeout_s
    while True:
        for run in reversed(list_runs(runs_dir)):
            st = run.read_status()
            node0 = st.get("launch") or {}
            if (st.get("profile") == profile.name and node0.get("nnodes") == launch.nnodes
                    and node0.get("master_addr") == launch.master_addr
                    and node0.get("master_port") == launch.master_port
                    and run.effective_state(st) in ("starting", "running")):
                return run
        if time.time() >= deadline:
            raise DistributedError(
                f"node {launch.node_rank}: no run of {profile.name!r} from node 0 "
                f"({launch.master_addr}:{launch.master_port}) appeared under {runs_dir}/ in "
                f"{timeout_s:.0f} s",
                hint="start node 0 first, and put the runs folder on a filesystem every node "
                     "sees (--runs-dir or train.runs_dir); or use `workbench launch-script`")
        time.sleep(poll_s)


def join(profile, runs_dir: Path, launch: Launch, printer=None) -> int:
    """`workbench run PROFILE --node-rank R` on machine R > 0: join node 0's run folder and
    start this machine's ranks. Node 0 owns the folder; this launcher only keeps
    ranks/node-R.json."""
    run = find_node0_run(profile, runs_dir, launch)
    print(f"node {launch.node_rank}: joining {run.name} ({launch.describe()})", flush=True)
    code = supervise(run, launch)
    print(f"node {launch.node_rank}: {'done' if code == 0 else 'failed'}; the run's state is in "
          f"{run.status_path}", flush=True)
    return code
