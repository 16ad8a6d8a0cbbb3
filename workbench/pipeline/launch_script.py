"""`workbench launch-script PROFILE --scheduler slurm`: a job script a cluster user can read
and submit (`sbatch run.sbatch`). It does three things, each a plain command:

1. on the job's first node, plan the profile and create its run folder (the folder must be
   on a filesystem every node sees: the runs folder is shared by the ranks);
2. take the rendezvous from the allocation: the first host of $SLURM_JOB_NODELIST is node 0;
3. `srun` one workbench launcher per node (torchrun's agent inside, `--node-rank` from
   $SLURM_NODEID), which starts one rank per GPU.

No torch here: the script is text.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

DEFAULT_GPUS_PER_NODE = 8


def _q(value: str) -> str:
    return shlex.quote(str(value))


def slurm_script(profile, profile_ref: str, overrides: list[str], *, nodes: int,
                 gpus_per_node: int, time_limit: str = "24:00:00", partition: str = "",
                 runs_dir: str | None = None, python: str = "python") -> str:
    """The sbatch script, as text. `profile` is the loaded profile (for its name and the
    [distributed] master port); `overrides` are passed on as --set."""
    d = profile.distributed
    name = f"workbench-{profile.name}"
    sets = list(overrides) + [f"distributed.nnodes={nodes}", f"distributed.gpus={gpus_per_node}"]
    set_args = " ".join(f"--set {_q(s)}" for s in sets)
    runs = f" --runs-dir {_q(runs_dir)}" if runs_dir else ""
    lines = [
        "#!/bin/bash",
        f"# {name}: {nodes} node(s) x {gpus_per_node} GPU(s), written by "
        f"`workbench launch-script {profile_ref} --scheduler slurm`.",
        "# Submit with: sbatch THIS_FILE. The runs folder must be on a filesystem every node sees.",
        f"#SBATCH --job-name={name}",
        f"#SBATCH --nodes={nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={gpus_per_node}",
        f"#SBATCH --time={time_limit}",
        "#SBATCH --output=%x-%j.out",
    ]
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    lines += [
        "",
        "set -euo pipefail",
        "",
        "# 1. Plan the profile and create the run folder, once, on this (the first) node.",
        f"RUN_DIR=$({python} -m workbench.pipeline.launch prepare {_q(profile_ref)} "
        f"{set_args}{runs})",
        'echo "run folder: $RUN_DIR"',
        "",
        "# 2. Rendezvous from the allocation: the job's first host is node 0.",
        'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        f"MASTER_PORT={d.master_port}",
        "",
        "# 3. One launcher per node; each starts torchrun's agent and one rank per GPU.",
        "#    Follow with `workbench attach \"$RUN_DIR\"`; stop with `scancel $SLURM_JOB_ID`",
        "#    (every rank gets SIGTERM, saves one checkpoint and stops).",
        "srun --kill-on-bad-exit=1 --ntasks-per-node=1 bash -c "
        f"'exec {python} -m workbench.pipeline.launch launch \"$0\" "
        "--node-rank \"$SLURM_NODEID\" --master-addr \"$1\" --master-port \"$2\"' "
        '"$RUN_DIR" "$MASTER_ADDR" "$MASTER_PORT"',
        "",
    ]
    return "\n".join(lines)


def cmd_launch_script(args) -> int:
    from workbench.profile import ProfileError, load_profile

    try:
        profile = load_profile(args.profile, args.overrides)
    except ProfileError as exc:
        print(f"error: invalid profile\n{exc}", file=sys.stderr)
        return 2
    d = profile.distributed
    nodes = args.nodes or d.nnodes
    gpus = args.gpus_per_node or (d.gpus if isinstance(d.gpus, int) else
                                  len(d.gpus.split(",")) if d.gpus != "auto"
                                  else DEFAULT_GPUS_PER_NODE)
    if nodes < 1 or gpus < 1:
        print("error: --nodes and --gpus-per-node must be at least 1", file=sys.stderr)
        return 2
    text = slurm_script(profile, args.profile, args.overrides, nodes=nodes, gpus_per_node=gpus,
                        time_limit=args.time, partition=args.partition,
                        runs_dir=str(args.runs_dir) if getattr(args, "runs_dir", None) else None)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        Path(args.output).chmod(0o755)
        print(f"wrote {args.output}: submit with `sbatch {args.output}`")
    else:
        sys.stdout.write(text)
    return 0
