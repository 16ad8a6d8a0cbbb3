"""Benchmark `inspect_dataset` on synthetic Alpaca JSONL; writes bench/data_inspect.md.

    python bench/data_inspect.py            # 100k rows (with/without tokenizer) + 1M streaming
    python bench/data_inspect.py --huge     # also 10M rows (a ~7.6 GB file in /tmp, deleted after)
    python bench/data_inspect.py --quick    # 10k / 100k, for a smoke run

Each case runs in its own subprocess so peak RSS is that case's alone: the VmHWM of the process
running it plus the VmHWM of the dedup worker process `inspect_dataset` starts for inputs over
64 MB (its `near_duplicates.worker_peak_rss_bytes`), added up.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _shared import header_lines

REPO = Path(__file__).resolve().parents[1]
WORDS = ("the of and to in is was for on that with as by at from his her an which were are this be "
         "model data train answer question city river history science music light energy water "
         "system learn small large quickly slowly because however therefore example result").split()


# The table before the rework of issue 27 (2026-11-28, same machine and data), for comparison.
PREVIOUS = """\
| case | rows | wall s | rows/s | peak RSS MB | exact removable | near removable |
|---|---:|---:|---:|---:|---:|---:|
| 100,000 rows, exact+near dedup, no tokenizer | 100,000 | 8.0 | 12,433 | 183 | 2,053 | 1980 |
| 100,000 rows, exact+near dedup, tiny tokenizer | 100,000 | 26.1 | 3,829 | 556 | 2,053 | 1980 |
| 1,000,000 rows streaming, exact+near | 1,000,000 | 83.3 | 12,004 | 1,268 | 20,115 | 19721 |
| 1,000,000 rows streaming, exact only | 1,000,000 | 53.3 | 18,756 | 222 | 20,115 | - |
"""


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
# The worker's own VmHWM (ru_maxrss of children would count the parent's size at the fork).
child = (nd.get("worker_peak_rss_bytes") or 0) // 2**20
print(json.dumps({"rows": r.rows, "wall": wall, "rss_mb": hwm + child, "main_mb": hwm, "child_mb": child,
                  "exact": r.exact_duplicates["rows_removable"], "near": nd.get("rows_removable"),
                  "exact_index_mb": r.exact_duplicates["memory_bytes"] / 1e6,
                  "near_index_mb": nd["memory_bytes"] / 1e6 if nd else None,
                  "indexed": nd.get("rows_indexed"), "past_bound": nd.get("rows_past_bound")}))
"""


def run_case(path: Path, tokenizer: str, near: bool) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="true")
    out = subprocess.run([sys.executable, "-c", CASE, str(path), tokenizer, "1" if near else "0"],
                         cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--huge", action="store_true", help="add the 10,000,000-row case")
    args = ap.parse_args()
    small, big = (10_000, 100_000) if args.quick else (100_000, 1_000_000)
    tiny = str(REPO / "assets" / "tiny-model")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        p_small, p_big = Path(tmp) / "small.jsonl", Path(tmp) / "big.jsonl"
        make_jsonl(p_small, small)
        cases = [(f"{small:,} rows, exact+near dedup, no tokenizer", p_small, "-", True, 15, 1024),
                 (f"{small:,} rows, exact+near dedup, tiny tokenizer", p_small, tiny, True, None, 1024)]
        for name, path, tok, near, limit_s, limit_mb in cases:
            results.append((name, run_case(path, tok, near), limit_s, limit_mb))
        make_jsonl(p_big, big)
        for near in (True, False):
            name = f"{big:,} rows streaming, {'exact+near' if near else 'exact only'}"
            results.append((name, run_case(p_big, "-", near), 30 if near else None, 1024))
    if args.huge:
        huge = 10 * big
        with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
            p_huge = Path(tmp) / "huge.jsonl"
            need = huge * 800
            if shutil.disk_usage(tmp).free < need * 1.2:
                sys.exit(f"not enough space in /tmp for {need / 1e9:.1f} GB")
            make_jsonl(p_huge, huge, seed=1)
            size_gb = p_huge.stat().st_size / 1e9
            name = f"{huge:,} rows streaming ({size_gb:.1f} GB file), exact+near"
            results.append((name, run_case(p_huge, "-", True), None, 1024))

    lines = header_lines("Dataset inspection benchmark",
                         f"python bench/data_inspect.py{' --quick' if args.quick else ''}"
                         f"{' --huge' if args.huge else ''}", packages=("numpy", "xxhash"))
    lines += [
        "- data: synthetic Alpaca JSONL, outputs ~700 chars, 2% exact + 2% near copies injected",
        "- peak RSS: VmHWM of the process running the case + VmHWM of its dedup worker process",
        "  (started for inputs over 64 MB), including Python and imports",
        "- dedup memory: `exact_duplicates.memory_bytes` (12 bytes a distinct row) and `near_duplicates.memory_bytes`",
        "  (264 bytes a signed row, at most `near_dup_max_rows` = 1,000,000 rows; past the bound rows are checked",
        "  against the index, not added)", "",
        "| case | rows | wall s | rows/s | peak RSS MB (main + worker) | exact removable | near removable "
        + "| exact index MB | MinHash index MB | target | met |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, r, limit_s, limit_mb in results:
        target = " & ".join(x for x in ((f"<= {limit_s} s" if limit_s else ""), f"< {limit_mb} MB") if x)
        met = (limit_s is None or r["wall"] <= limit_s) and r["rss_mb"] < limit_mb
        near_mb = f"{r['near_index_mb']:.0f}" if r["near_index_mb"] is not None else "-"
        lines.append(f"| {name} | {r['rows']:,} | {r['wall']:.1f} | {r['rows'] / r['wall']:,.0f} "
                     f"| {r['rss_mb']:,} ({r['main_mb']:,} + {r['child_mb']:,}) "
                     f"| {r['exact']:,} | {r['near'] if r['near'] is not None else '-'} "
                     f"| {r['exact_index_mb']:.0f} | {near_mb} | {target} | {'yes' if met else 'NO'} |")
    past = [r for _, r, _, _ in results if r.get("past_bound")]
    for r in past:
        lines.append("")
        lines.append(f"The {r['rows']:,}-row case: {r['indexed']:,} rows in the MinHash index, "
                     f"{r['past_bound']:,} rows past the bound checked against it; near copies whose "
                     "both rows lie past the bound are not counted.")
    lines += ["", "Before (2026-11-28, same machine; peak RSS of the one process):", "", PREVIOUS.rstrip()]
    text = "\n".join(lines) + "\n"
    (REPO / "bench" / "data_inspect.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
