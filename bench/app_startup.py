"""The app's footprint, measured the way a user meets it: `workbench` started in a real
pseudo-terminal (80x24, TERM=xterm-256color), its output drained as a terminal would.

1. startup: time from process start to the first frame that shows the runs list and the
   footer (the first *complete* frame), median of several launches;
2. idle: CPU of the app on the Runs screen, doing nothing, over 15 s (/proc/PID/stat ticks);
3. monitoring: CPU and memory (VmRSS / VmHWM) of the app on the Train screen following a
   live run that logs 4 lines a second (ten times what a typical run logs), over 15 s.

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
    time.sleep(0.25)
"""


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


def main() -> None:
    quick = "--quick" in sys.argv
    window = 5.0 if quick else 15.0
    launches = 3 if quick else 7
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        sys.path.insert(0, str(REPO / "tests"))
        from app_helpers import make_finished_run

        first = make_finished_run(runs, "demo")
        env = app_env(runs)
        cmd = [sys.executable, "-m", "workbench"]

        startup = []
        for _ in range(launches):
            term = Terminal(cmd, env)
            startup.append(term.wait_for(first.name[:12].encode(), b"Quit"))
            time.sleep(0.3)
            term.close()

        term = Terminal(cmd, env)
        term.wait_for(first.name[:12].encode(), b"Quit")
        time.sleep(3)  # let the first polls settle
        b0 = term.nbytes
        idle_cpu = cpu_over(term, window)
        idle_bytes = (term.nbytes - b0) / window
        idle_rss, _ = term.memory_mb()
        term.close()

        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(runs)], cwd=REPO,
                                  stdout=subprocess.PIPE, text=True, env=env)
        try:
            run_path = writer.stdout.readline().strip()
            term = Terminal([sys.executable, "-m", "screens.app", run_path], env)
            term.wait_for(b"bench-", b"running")
            time.sleep(3)
            b0 = term.nbytes
            live_cpu = cpu_over(term, window)
            live_bytes = (term.nbytes - b0) / window
            live_rss, live_hwm = term.memory_mb()
            term.close()
        finally:
            writer.kill()
            writer.wait()

    versions = {name: metadata.version(name) for name in ("textual", "textual-plotext", "plotext")}
    result = {
        "startup_median_s": round(statistics.median(startup), 3),
        "startup_max_s": round(max(startup), 3),
        "idle_cpu_pct": round(idle_cpu, 2), "idle_bytes_per_s": round(idle_bytes),
        "idle_rss_mb": round(idle_rss, 1),
        "monitor_cpu_pct": round(live_cpu, 2), "monitor_bytes_per_s": round(live_bytes),
        "monitor_rss_mb": round(live_rss, 1), "monitor_peak_rss_mb": round(live_hwm, 1),
    }
    print(json.dumps(result, indent=2))
    print()
    print(f"Measured {time.strftime('%Y-%m-%d')} on {platform.node()} "
          f"({os.cpu_count()} CPUs, {platform.processor() or platform.machine()}), "
          f"Python {platform.python_version()}, "
          + ", ".join(f"{k} {v}" for k, v in versions.items())
          + f"; {launches} launches, {window:.0f} s windows.")
    print()
    print("| measure | target | result |")
    print("|---|---|---|")
    print(f"| launch to first complete frame (median / max of {launches}) | <= 1.0 s | "
          f"{result['startup_median_s']:.2f} s / {result['startup_max_s']:.2f} s |")
    print(f"| idle CPU, Runs screen | < 1% of a core | {result['idle_cpu_pct']:.2f}% "
          f"({result['idle_bytes_per_s']} B/s to the terminal) |")
    print(f"| CPU monitoring a live run (4 log lines/s) | < 3% of a core | "
          f"{result['monitor_cpu_pct']:.2f}% ({result['monitor_bytes_per_s']} B/s to the terminal) |")
    print(f"| app memory while monitoring (RSS / peak) | < 200 MB | "
          f"{result['monitor_rss_mb']:.0f} MB / {result['monitor_peak_rss_mb']:.0f} MB |")


if __name__ == "__main__":
    main()
