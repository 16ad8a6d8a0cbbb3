"""How many CPU threads a run's torch may use, so a busy machine does not become a slow one.

Why: by default torch starts one OpenMP thread per core of the machine, and GNU OpenMP threads
spin while they wait at a barrier. When other processes keep some cores busy, the spinning
threads steal time from the working ones: issue 11 measured the demo at 13.5 min instead of
29 s under load from one other process (15x the CPU time). So a run uses the cores it may run
on (`os.sched_getaffinity`, which honours taskset / cgroup cpusets) minus those other processes
keep busy (sampled from /proc/stat, this process's own CPU time taken out; the load average
elsewhere). `WORKBENCH_CPU_THREADS=N` sets the count.

Measured (`bench/demo_under_load.md`, 2 cores, demo with 40 steps, one busy process): 20.1 s
with one thread per core as before, 11.4 s sized; quiet: 10.8 s and 11.4 s. OpenMP's passive
waiting (`OMP_WAIT_POLICY=PASSIVE`) was measured too and left out: it slowed the quiet demo
(14.2 s) and did not help under load once the threads fit the idle cores.

Issue 25: one fifth of a second at start decided the whole run, so a command that ran for a
moment then (a shell, a test ending) left a run on 1 thread of 2 for hours, 30% slower than
TRL on the same machine. Now the start sample is the median of short slices (a blip in one
does not count), and `ThreadWatch` looks again every 30 s while the run trains: the load over
that interval, which costs two reads of /proc/stat and no waiting, so a run follows the
machine both ways (another process starts: fewer threads; it ends: all of them again).
"""

from __future__ import annotations

import itertools
import os
import time

# Set when size_torch_threads chose the count itself (not WORKBENCH_CPU_THREADS, not a
# distributed launch, which sets it): only then may ThreadWatch change it.
_automatic = False


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


def _sample() -> tuple[float, float, float]:
    """(CPU seconds the whole machine has been busy, this process's CPU seconds, monotonic
    seconds) now. OSError / ValueError where /proc/stat is missing or unreadable."""
    with open("/proc/stat", encoding="ascii") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return ((sum(fields) - idle) / os.sysconf("SC_CLK_TCK"), sum(os.times()[:2]),
            time.monotonic())


def _load_between(start: tuple[float, float, float], end: tuple[float, float, float]) -> float:
    """Cores other processes kept busy between two samples."""
    elapsed = end[2] - start[2]
    if elapsed <= 0:
        return 0.0
    return max(0.0, ((end[0] - start[0]) - (end[1] - start[1])) / elapsed)


def busy_elsewhere(sample_s: float = 0.4, slices: int = 4) -> float:
    """Cores other processes keep busy now: machine-wide busy time from /proc/stat over
    `sample_s`, minus this process's own CPU time; the median of `slices` equal slices, so
    a process that ran for a moment does not count. Falls back to the 1-minute load average."""
    try:
        points = [_sample()]
        for _ in range(slices):
            time.sleep(sample_s / slices)
            points.append(_sample())
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except (AttributeError, OSError):
            return 0.0
    loads = sorted(_load_between(a, b) for a, b in itertools.pairwise(points))
    middle = len(loads) // 2
    return loads[middle] if len(loads) % 2 else (loads[middle - 1] + loads[middle]) / 2


def size_torch_threads() -> str:
    """Set torch's intra-op threads from the cores and the load now; returns a line for the
    run log."""
    global _automatic
    import torch

    cores = usable_cores()
    chosen = os.environ.get("WORKBENCH_CPU_THREADS", "").strip()
    if chosen.isdigit() and int(chosen) > 0:  # the person's choice wins
        _automatic = False
        torch.set_num_threads(int(chosen))
        return f"cpu: torch uses {chosen} threads (WORKBENCH_CPU_THREADS)"
    load = busy_elsewhere()
    threads = choose_threads(cores, load)
    torch.set_num_threads(threads)
    _automatic = True
    return (f"cpu: torch uses {threads} thread{'s' if threads != 1 else ''} "
            f"({cores} usable cores, load {load:.1f} from other processes)")


class ThreadWatch:
    """Re-sizes torch's threads while a CPU run trains, when size_torch_threads chose them:
    `check()` at each step end looks at the load since its last look, every `every_s`."""

    def __init__(self, every_s: float = 30.0):
        self.every_s = every_s
        self._last = None
        if _automatic and not os.environ.get("WORKBENCH_CPU_THREADS", "").strip():
            try:
                self._last = _sample()
            except (OSError, ValueError, IndexError):  # no /proc/stat: keep the start's count
                pass

    def check(self) -> str | None:
        """A line for the run log when the thread count changed, else None."""
        if self._last is None or time.monotonic() - self._last[2] < self.every_s:
            return None
        try:
            now = _sample()
        except (OSError, ValueError, IndexError):
            return None
        load, self._last = _load_between(self._last, now), now
        import torch

        cores = usable_cores()
        threads, before = choose_threads(cores, load), torch.get_num_threads()
        if threads == before:
            return None
        torch.set_num_threads(threads)
        return (f"cpu: torch now uses {threads} thread{'s' if threads != 1 else ''} instead of "
                f"{before} ({cores} usable cores, load {load:.1f} from other processes over "
                f"the last {self.every_s:.0f} s)")
