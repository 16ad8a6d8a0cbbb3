"""The tokenized-data cache (workbench/data/token_cache.py): how long planning a run takes to
get its data, without the cache, on a first run (tokenize and store) and on a second run (read
back), on SmolLM2-135M-Instruct's tokenizer. Writes bench/token_cache.md.

    flock -x /tmp/bench.lock python bench/token_cache.py            # alpaca 999 rows and x10
    python bench/token_cache.py --quick                             # one repeat, 999 rows only

Every measurement is a fresh process (imports, tokenizer and chat-format probes as a new run
has them), planning the demo profile with model.name_or_path = SmolLM2 and data.train = the
data; "data step" is the time spent in prepare_data_cached (key, lookup, and on a miss loading,
splitting, rendering and storing), "plan" is the whole plan_run. The x10 file repeats the
Alpaca rows ten times, each copy's instruction numbered so no row is a duplicate.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ALPACA = REPO.parent / "shared" / "data" / "alpaca_en_demo.json"

CHILD = r"""
import json, sys, time
import workbench.train.data_cache as dc
from workbench.profile import load_profile
from workbench.train.plan import plan_run

real, spent = dc.prepare_data_cached, []
def timed(*args, **kwargs):
    started = time.perf_counter()
    try:
        return real(*args, **kwargs)
    finally:
        spent.append(time.perf_counter() - started)
dc.prepare_data_cached = timed
started = time.perf_counter()
plan = plan_run(load_profile("demo", sys.argv[1:]))
total = time.perf_counter() - started
print(json.dumps({"data_s": spent[0], "plan_s": total, "rows": len(plan.train_rows) + len(plan.eval_rows),
                  "source": plan.data_source}))
"""


def model_folder() -> Path:
    from workbench.models.smollm2 import model_dir

    return model_dir()


def make_x10(path: Path) -> None:
    rows = json.loads(ALPACA.read_text(encoding="utf-8"))
    out = [dict(r, instruction=f"{r['instruction']} ({copy + 1})") for copy in range(10)
           for r in rows]
    path.write_text(json.dumps(out, ensure_ascii=False), encoding="utf-8")


def measure(data: Path, cache: Path, off: bool) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", WORKBENCH_TOKEN_CACHE=str(cache),
               WORKBENCH_CACHE_MAX_GB="0" if off else "5")
    overrides = [f'model.name_or_path="{model_folder()}"', f'data.train="{data}"',
                 "train.max_seq_len=1024"]
    proc = subprocess.run([sys.executable, "-c", CHILD, *overrides], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1200, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"planning failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def entry_bytes(cache: Path) -> int:
    return sum(f.stat().st_size for f in cache.rglob("*") if f.is_file())


def versions() -> str:
    import platform
    from importlib.metadata import version

    return (f"Python {platform.python_version()}, transformers {version('transformers')}, "
            f"tokenizers {version('tokenizers')}, numpy {version('numpy')}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="one repeat, the 999 rows only")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write", default=str(REPO / "bench" / "token_cache.md"))
    a = parser.parse_args()
    if not ALPACA.is_file():
        print(f"{ALPACA} is missing: the benchmark needs it. Nothing was measured.", file=sys.stderr)
        return 2
    if not (model_folder() / "tokenizer.json").is_file():
        print("SmolLM2-135M-Instruct is not converted (`python -m workbench.models.smollm2`). "
              "Nothing was measured.", file=sys.stderr)
        return 2
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _shared import cpu_machine

    repeat = 1 if a.quick else a.repeat
    lines = []
    with tempfile.TemporaryDirectory(prefix="token-cache-bench-") as tmp:
        x10 = Path(tmp) / "alpaca_x10.json"
        make_x10(x10)
        cases = [("alpaca_en_demo.json", ALPACA)] + ([] if a.quick else [("alpaca x10", x10)])
        for label, data in cases:
            runs: dict[str, list[dict]] = {"off": [], "first": [], "second": []}
            size = 0
            for i in range(repeat):
                cache = Path(tmp) / f"cache-{label}-{i}".replace(" ", "_")
                runs["off"].append(measure(data, cache, off=True))
                runs["first"].append(measure(data, cache, off=False))
                size = entry_bytes(cache)
                runs["second"].append(measure(data, cache, off=False))
                assert runs["second"][-1]["source"].startswith("tokenized data from the cache"), runs
                print(label, i, {k: round(v[-1]["data_s"], 3) for k, v in runs.items()}, flush=True)
            med = {k: (statistics.median(r["data_s"] for r in v), statistics.median(r["plan_s"] for r in v))
                   for k, v in runs.items()}
            rows = runs["first"][0]["rows"]
            for kind, what in (("off", "no cache (WORKBENCH_CACHE_MAX_GB=0)"),
                               ("first", "first run: tokenize + store"),
                               ("second", "second run: read back")):
                data_s, plan_s = med[kind]
                mb = "-" if kind == "off" else f"{size / 1e6:.1f}"
                lines.append(f"| {label} | {rows:,} | {what} | {data_s:.2f} | {plan_s:.2f} | "
                             f"{med['off'][0] / data_s:.2f}x | {mb} |")
    table = "\n".join([
        "# Tokenized-data cache: planning time, first and second run",
        "",
        f"- date: {datetime.date.today().isoformat()}",
        f"- machine: {cpu_machine()} (shared; measured under `flock -x /tmp/bench.lock`)",
        f"- versions: {versions()}",
        f"- command: `flock -x /tmp/bench.lock python bench/token_cache.py{' --quick' if a.quick else ''}`",
        ("- tokenizer: SmolLM2-135M-Instruct (its own chat template), demo profile, "
         "train.max_seq_len = 1024, SFT"),
        (f"- each cell: the median of {repeat} fresh processes; \"data step\" = prepare_data_cached "
         "(key: data hash, tokenizer fingerprint, code hash; then lookup, or load + split + render "
         "+ store), \"plan\" = the whole plan_run (tokenizer load, template checks included)"),
        "",
        "| data | rows | run | data step s | plan s | data step speed vs no cache | entry MB |",
        "|---|---:|---|---:|---:|---:|---:|",
        *lines,
        "",
    ])
    Path(a.write).write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
