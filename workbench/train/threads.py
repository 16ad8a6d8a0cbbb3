"""How many CPU threads a run's torch may use, so a busy machine does not become a slow one.

Why: by default torch starts one OpenMP thread per core of the machine, and GNU OpenMP threads
spin while they wait at a barrier. When other processes keep some cores busy, the spinning
threads steal time from the working ones: issue 11 measured the demo at 13.5 min instead of
29 s under load from one other process (15x the CPU time). So a run uses the cores it may run
on (`os.sched_getaffinity`, which honours taskset / cgroup cpusets) minus those other processes
keep busy (sampled from /proc/stat for a fifth of a second, this process's own CPU time taken
out; the load average elsewhere). `WORKBENCH_CPU_THREADS=N` sets the count.

Measured (`bench/demo_under_load.md`, 2 cores, demo with 40 steps, one busy process): 20.1 s
with one thread per core as before, 11.4 s sized; quiet: 10.8 s and 11.4 s. OpenMP's passive
waiting (`OMP_WAIT_POLICY=PASSIVE`) was measured too and left out: it slowed the quiet demo
(14.2 s) and did not help under load once the threads fit the idle cores.
"""

from __future__ import annotations

import os
import time


def usable_cores() -> int:
    """Cores this process may run on (affinity / cpuset), not the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def choose_threads(cores: int, load: float) -> int:
    """Threads for `cores` usable cores when other processes keep `load` of them busy:
    the idle ones, at least one, at most `cores`."""
    busy = min(cores - 1, int(load + 0.5))
    return max(1, cores - max(0, busy))


def busy_elsewhere(sample_s: float = 0.2) -> float:
    """Cores other processes keep busy now: machine-wide busy time from /proc/stat over a short
    sample, minus this process's own CPU time. Falls back to the 1-minute load average."""
    def machine() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields) - idle, sum(fields)

    try:
        busy0, _ = machine()
        own0, t0 = sum(os.times()[:2]), time.monotonic()
        time.sleep(sample_s)
        busy1, _ = machine()
        own1, t1 = sum(os.times()[:2]), time.monotonic()
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except (AttributeError, OSError):
            return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return max(0.0, ((busy1 - busy0) / ticks - (own1 - own0)) / (t1 - t0))


def size_torch_threads() -> str:
    """Set torch's intra-op threads from the cores and the load now; returns a line for the
    run log."""
    import torch

    cores = usable_cores()
    chosen = os.environ.get("WORKBENCH_CPU_THREADS", "").strip()
    if chosen.isdigit() and int(chosen) > 0:  # the person's choice wins
        torch.set_num_threads(int(chosen))
        return f"cpu: torch uses {chosen} threads (WORKBENCH_CPU_THREADS)"
    load = busy_elsewhere()
    threads = choose_threads(cores, load)
    torch.set_num_threads(threads)
    return (f"cpu: torch uses {threads} thread{'s' if threads != 1 else ''} "
            f"({cores} usable cores, load {load:.1f} from other processes)")
