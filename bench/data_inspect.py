"""Benchmark `inspect_dataset` on synthetic Alpaca JSONL; writes bench/data_inspect.md.

    python bench/data_inspect.py            # 100k rows (with/without tokenizer) + 1M streaming
    python bench/data_inspect.py --quick    # 10k / 100k, for a smoke run

Each case runs in its own subprocess so peak RSS (VmHWM) is that case's alone.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORDS = ("the of and to in is was for on that with as by at from his her an which were are this be "
         "model data train answer question city river history science music light energy water "
         "system learn small large quickly slowly because however therefore example result").split()


def make_jsonl(path: Path, rows: int, seed: int = 0) -> None:
    """~700-char outputs; 2% exact copies and 2% near copies (3 words changed) of earlier rows."""
    rng = random.Random(seed)
    recent: list[dict] = []
    with path.open("w") as f:
        for i in range(rows):
            roll = rng.random()
            if recent and roll < 0.02:
                row = rng.choice(recent)
            elif recent and roll < 0.04:
                base = rng.choice(recent)
                words = base["output"].split()
                for _ in range(3):
                    words[rng.randrange(len(words))] = rng.choice(WORDS)
                row = {**base, "output": " ".join(words)}
            else:
                n = rng.randint(80, 160)
                row = {"instruction": " ".join(rng.choices(WORDS, k=12)) + "?", "input": "",
                       "output": " ".join(rng.choices(WORDS, k=n))}
            recent = (recent + [row])[-1000:]
            f.write(json.dumps(row) + "\n")


CASE = r"""
import json, sys, time
from workbench.data.inspect import inspect_dataset
path, tok, near = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
tokenizer = None
if tok != "-":
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(tok)
t = time.perf_counter()
r = inspect_dataset(path, tokenizer=tokenizer, max_seq_len=512 if tokenizer else None, near_dups=near)
wall = time.perf_counter() - t
hwm = int([l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]) // 1024
nd = r.near_duplicates or {}
print(json.dumps({"rows": r.rows, "wall": wall, "rss_mb": hwm, "exact": r.exact_duplicates["rows_removable"],
                  "near": nd.get("rows_removable")}))
"""


def run_case(path: Path, tokenizer: str, near: bool) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="true")
    out = subprocess.run([sys.executable, "-c", CASE, str(path), tokenizer, "1" if near else "0"],
                         cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    small, big = (10_000, 100_000) if args.quick else (100_000, 1_000_000)
    tiny = str(REPO / "assets" / "tiny-model")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        p_small, p_big = Path(tmp) / "small.jsonl", Path(tmp) / "big.jsonl"
        make_jsonl(p_small, small)
        cases = [(f"{small:,} rows, exact+near dedup, no tokenizer", p_small, "-", True, 15, 1536),
                 (f"{small:,} rows, exact+near dedup, tiny tokenizer", p_small, tiny, True, None, 1536)]
        for name, path, tok, near, limit_s, limit_mb in cases:
            results.append((name, run_case(path, tok, near), limit_s, limit_mb))
        make_jsonl(p_big, big)
        for near in (True, False):
            name = f"{big:,} rows streaming, {'exact+near' if near else 'exact only'}"
            results.append((name, run_case(p_big, "-", near), None, 2048))

    import numpy
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    lines = [
        "# Dataset inspection benchmark", "",
        f"- date: {datetime.date.today()}",
        f"- machine: {cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, numpy {numpy.__version__}",
        f"- command: `python bench/data_inspect.py{' --quick' if args.quick else ''}`",
        "- data: synthetic Alpaca JSONL, outputs ~700 chars, 2% exact + 2% near copies injected",
        "- peak RSS: VmHWM of the subprocess running the case (includes Python + imports)", "",
        "| case | rows | wall s | rows/s | peak RSS MB | exact removable | near removable | target | met |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, r, limit_s, limit_mb in results:
        target = " & ".join(x for x in ((f"<= {limit_s} s" if limit_s else ""), f"< {limit_mb} MB") if x)
        met = (limit_s is None or r["wall"] <= limit_s) and r["rss_mb"] < limit_mb
        lines.append(f"| {name} | {r['rows']:,} | {r['wall']:.1f} | {r['rows'] / r['wall']:,.0f} | {r['rss_mb']:,} "
                     f"| {r['exact']:,} | {r['near'] if r['near'] is not None else '-'} | {target} | {'yes' if met else 'NO'} |")
    text = "\n".join(lines) + "\n"
    (REPO / "bench" / "data_inspect.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
