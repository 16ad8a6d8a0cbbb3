"""The app's footprint, measured the way a user meets it: `workbench` started in a real
pseudo-terminal (80x24, TERM=xterm-256color), its output drained as a terminal would.

1. startup: time from process start to the first frame that shows the runs list and the
   footer (the first *complete* frame), median of several launches, measured
   - quiet: nothing else started by the bench;
   - beside a training run: a real `workbench run --detach demo` (the bundled tiny model,
     CPU training on every core), started as the product starts it (detached, at the
     priority detached runs take: workbench/pipeline/worker.py lower_priority);
   - beside a foreign CPU job: one `while True: pass` process per core at normal priority;
2. idle: CPU of the app on the Runs screen, doing nothing, over 15 s (/proc/PID/stat ticks);
3. monitoring: CPU and memory (VmRSS / VmHWM) of the app on the Train screen following a
   live run, over 20 s, at a typical run's logging rate (a log line every 2.5 s, an eval
   every 20 lines: logging every 10 steps at 4 steps a second) and at ten times it (a stress
   row, 4 lines a second, over 15 s).

Usage: python bench/app_startup.py [--quick]   (prints a Markdown table)
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")

WRITER = r"""
import json, os, sys, time
from workbench.rundir import RunDir
run = RunDir.create(sys.argv[1], "bench")
every = float(sys.argv[2])
run.write_status(state="running", pid=os.getpid(), step=0, total_steps=100000)
run.append_event("status", state="running", message="bench writer")
print(run.path, flush=True)
step = 0
while True:
    step += 1
    run.append_event("log", step=step, epoch=step / 1000, loss=2.0 / (1 + step / 50),
                     learning_rate=2e-4, grad_norm=0.5, tokens_per_s=1500.0,
                     gpu_mem_bytes=None, gpu_mem_peak_bytes=None, eta_s=3600.0)
    if step % 20 == 0:
        run.append_event("eval", step=step, epoch=step / 1000, eval_loss=2.2 / (1 + step / 50))
    with open(run.log_path, "a") as fh:
        fh.write(f"step {step} loss {2.0 / (1 + step / 50):.4f}\n")
    run.write_status(step=step)
    time.sleep(every)
"""

SPIN = "while True: pass"


class Terminal:
    """A child process on a pty whose output is read (and counted) continuously."""

    def __init__(self, argv: list[str], env: dict, cols: int = 80, rows: int = 24):
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     cwd=REPO, start_new_session=True, close_fds=True)
        os.close(slave)
        self.master = master
        self.buffer = bytearray()
        self.nbytes = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            with self.lock:
                self.nbytes += len(data)
                self.buffer += data
                del self.buffer[:-200_000]

    def wait_for(self, *needles: bytes, timeout: float = 20) -> float:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            with self.lock:
                if all(n in self.buffer for n in needles):
                    return time.perf_counter() - self.t0
            time.sleep(0.002)
        raise TimeoutError(f"never saw {needles}; last output: {bytes(self.buffer[-500:])!r}")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime

    def memory_mb(self) -> tuple[float, float]:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        values = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines()
                  if line.startswith(("VmRSS", "VmHWM"))}
        return values["VmRSS"] / 1024, values["VmHWM"] / 1024

    def close(self) -> None:
        try:
            os.write(self.master, b"q")
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        os.close(self.master)


def app_env(runs_dir: Path) -> dict:
    env = dict(os.environ, TERM="xterm-256color", COLORTERM="", WORKBENCH_RUNS_DIR=str(runs_dir),
               WORKBENCH_KEYMAP=str(runs_dir / "none.toml"), PYTHONPATH=str(REPO))
    for key in ("SSH_CONNECTION", "SSH_TTY", "TEXTUAL"):
        env.pop(key, None)
    return env


def cpu_over(term: Terminal, seconds: float) -> float:
    c0, t0 = term.cpu_seconds(), time.perf_counter()
    time.sleep(seconds)
    return (term.cpu_seconds() - c0) / (time.perf_counter() - t0) * 100


def launches_to_first_frame(cmd: list[str], env: dict, needle: bytes, n: int) -> list[float]:
    times = []
    for _ in range(n):
        term = Terminal(cmd, env)
        times.append(term.wait_for(needle, b"Quit"))
        time.sleep(0.3)
        term.close()
    return times


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its threads (torch's intra-op threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def start_training(runs: Path, env: dict) -> tuple[int, Path]:
    """A real detached demo run, as `workbench run --detach` starts it; returns (pid, folder)
    once it trains (its first logged step), so the launches meet training, not planning."""
    out = subprocess.run([sys.executable, "-m", "workbench", "--run", "demo", "--detach",
                          "--runs-dir", str(runs)], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"could not start the demo run: {out.stderr[-2000:]}")
    folder = next(p for p in runs.iterdir() if p.is_dir())
    deadline = time.time() + 120
    while time.time() < deadline:
        status = json.loads((folder / "status.json").read_text() or "{}")
        if (status.get("step") or 0) >= 1:
            return int(status["pid"]), folder
        if status.get("state") in ("failed", "finished", "stopped"):
            break
        time.sleep(0.5)
    raise RuntimeError(f"the demo run never trained: {(folder / 'train.log').read_text()[-2000:]}"
                       if (folder / "train.log").exists() else "the demo run never trained")


def stop_process_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def loaded(cmd, env, needle, n, pid) -> tuple[list[float], float, int]:
    """Launches beside a running job `pid`: (times, cores the job used meanwhile, its nice)."""
    c0, t0 = proc_cpu_seconds(pid), time.perf_counter()
    times = launches_to_first_frame(cmd, env, needle, n)
    cores = (proc_cpu_seconds(pid) - c0) / (time.perf_counter() - t0)
    nice = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])
    return times, cores, nice


def monitor(runs: Path, env: dict, every: float, window: float) -> tuple[float, float, float, float]:
    """(CPU %, bytes/s to the terminal, RSS MB, peak RSS MB) of the Train screen following a
    run that logs a line every `every` seconds."""
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(runs), str(every)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        run_path = writer.stdout.readline().strip()
        term = Terminal([sys.executable, "-m", "screens.app", run_path], env)
        term.wait_for(b"bench-", b"running")
        time.sleep(3)
        b0 = term.nbytes
        cpu = cpu_over(term, window)
        nbytes = (term.nbytes - b0) / window
        rss, hwm = term.memory_mb()
        term.close()
    finally:
        writer.kill()
        writer.wait()
    return cpu, nbytes, rss, hwm


def main() -> None:
    quick = "--quick" in sys.argv
    window = 5.0 if quick else 15.0
    launches = 3 if quick else 7
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        sys.path.insert(0, str(REPO / "tests"))
        from app_helpers import make_finished_run

        first = make_finished_run(runs, "demo")
        env = app_env(runs)
        cmd = [sys.executable, "-m", "workbench"]
        needle = first.name[:12].encode()

        startup = launches_to_first_frame(cmd, env, needle, launches)

        # Beside a real training run, as a user has one going while they open the app.
        train_env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
        pid, _ = start_training(Path(tmp) / "busy-runs", train_env)
        try:
            startup_train, train_cores, train_nice = loaded(cmd, env, needle, launches, pid)
        finally:
            stop_process_group(pid)

        # Beside a foreign CPU job at normal priority: one spinning process per core.
        spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(cores)]
        try:
            time.sleep(0.5)
            # The first spinner's share, times their count: what they all used meanwhile.
            startup_spin, one_core, _ = loaded(cmd, env, needle, launches, spinners[0].pid)
            spin_cores = one_core * cores
        finally:
            for p in spinners:
                p.kill()
                p.wait()

        term = Terminal(cmd, env)
        term.wait_for(needle, b"Quit")
        time.sleep(3)  # let the first polls settle
        b0 = term.nbytes
        idle_cpu = cpu_over(term, window)
        idle_bytes = (term.nbytes - b0) / window
        idle_rss, _ = term.memory_mb()
        term.close()

        live = window + 5
        typical = monitor(runs, env, 2.5, live)
        stress = monitor(runs, env, 0.25, window)

    versions = {name: metadata.version(name) for name in ("textual", "textual-plotext", "plotext")}
    quiet = statistics.median(startup)
    result = {
        "startup_median_s": round(quiet, 3), "startup_max_s": round(max(startup), 3),
        "startup_beside_training_median_s": round(statistics.median(startup_train), 3),
        "startup_beside_training_max_s": round(max(startup_train), 3),
        "training_cores_used": round(train_cores, 2), "training_nice": train_nice,
        "startup_beside_spinners_median_s": round(statistics.median(startup_spin), 3),
        "startup_beside_spinners_max_s": round(max(startup_spin), 3),
        "spinners_cores_used": round(spin_cores, 2),
        "idle_cpu_pct": round(idle_cpu, 2), "idle_bytes_per_s": round(idle_bytes),
        "idle_rss_mb": round(idle_rss, 1),
        "monitor_cpu_pct": round(typical[0], 2), "monitor_bytes_per_s": round(typical[1]),
        "monitor_rss_mb": round(typical[2], 1), "monitor_peak_rss_mb": round(typical[3], 1),
        "stress_cpu_pct": round(stress[0], 2), "stress_bytes_per_s": round(stress[1]),
        "stress_rss_mb": round(stress[2], 1), "stress_peak_rss_mb": round(stress[3], 1),
    }
    print(json.dumps(result, indent=2))
    print()
    print(f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {platform.node()} "
          f"({cores} CPUs, {platform.processor() or platform.machine()}), "
          f"Python {platform.python_version()}, "
          + ", ".join(f"{k} {v}" for k, v in versions.items())
          + f"; {launches} launches per row, {window:.0f} s idle and stress windows, "
          f"{live:.0f} s typical-rate window, one invocation.")
    print()
    print("| measure | target | result |")
    print("|---|---|---|")
    print(f"| first complete frame, quiet (median / max of {launches}) | <= 0.35 s | "
          f"{quiet:.2f} s / {max(startup):.2f} s |")
    print(f"| first complete frame beside a detached demo training run (median / max) | "
          f"<= {1.5 * 0.35:.2f} s (1.5x quiet target) | "
          f"{statistics.median(startup_train):.2f} s / {max(startup_train):.2f} s "
          f"(the run used {train_cores:.2f} cores at nice {train_nice}) |")
    print(f"| first complete frame beside {cores} normal-priority spinning processes "
          f"(median / max) | none (information) | {statistics.median(startup_spin):.2f} s / "
          f"{max(startup_spin):.2f} s (they used {spin_cores:.2f} cores) |")
    print(f"| idle CPU, Runs screen | < 1% of a core | {result['idle_cpu_pct']:.2f}% "
          f"({result['idle_bytes_per_s']} B/s to the terminal) |")
    print(f"| CPU monitoring a live run, typical rate (0.4 log lines/s) | < 1% of a core | "
          f"{result['monitor_cpu_pct']:.2f}% ({result['monitor_bytes_per_s']} B/s to the terminal) |")
    print(f"| CPU monitoring a live run, stress: 10x typical (4 log lines/s) | < 3% of a core | "
          f"{result['stress_cpu_pct']:.2f}% ({result['stress_bytes_per_s']} B/s to the terminal) |")
    print(f"| app memory while monitoring (RSS / peak, typical / stress) | < 60 MB | "
          f"{result['monitor_rss_mb']:.0f} / {result['monitor_peak_rss_mb']:.0f} MB, "
          f"{result['stress_rss_mb']:.0f} / {result['stress_peak_rss_mb']:.0f} MB |")


if __name__ == "__main__":
    main()
