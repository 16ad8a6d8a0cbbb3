#!/usr/bin/env bash
# Every GPU check issues 4, 5 and 12 still need, in one command for the device tool (one H200,
# 15 minutes of device time per session). Prepare with `bash bench/fetch_gpu_wheels.sh`, then:
#   run(command="bash bench/gpu_checks.sh", carry=[".whl"], timeout_s=590)
# Results land in $OUT (at most 8 files come back): estimate_memory_gpu.{json,md},
# preference_gpu_step.{json,md}, compare_batched_7b.md, compare_batched_tiny.md, bnb4.json,
# grpo_gpu_step.{json,md}, gpu_checks.log.
# Each step runs even when an earlier one failed; the log says which did. Arguments pick steps
# by key (memory, preference, compare-7b, compare-tiny, bnb4, grpo, throughput), e.g. `bash bench/gpu_checks.sh
# preference` for the preference step alone (~2.5 min); none: all of them. All of them write 10
# files, and the steps' timeouts add up to more than one call's 10 minutes: pick steps, e.g.
#   run(command="bash bench/gpu_checks.sh grpo", carry=[".whl"], timeout_s=300)
# for the GRPO step alone (~3 min, 3 files), or
#   run(command="bash bench/gpu_checks.sh throughput", carry=[".whl"], timeout_s=560)
# for the training throughput step alone (< 8 min, 3 files: gpu_train_throughput.{md,json}, log).
set -u
ONLY=" $* "
OUT=${OUT:-bench/out}; mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_checks.log") 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || { echo "wheel install failed"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, transformers, peft, trl, bitsandbytes; print('torch', torch.__version__, \
'transformers', transformers.__version__, 'peft', peft.__version__, 'trl', trl.__version__, \
'bitsandbytes', bitsandbytes.__version__)"
step() {
  if [ "$ONLY" != "  " ] && [[ "$ONLY" != *" $1 "* ]]; then return; fi
  echo; echo "== $1: $2 ($(date -u +%T))"; shift 2; "$@"; echo "== exit $?"
}

# Issues 4 and 10: the memory estimate against max_memory_reserved, 72 planned points, small
# first; the runner's-step points also against `estimate --trace` (traced on a CPU beforehand:
# bench/estimate_memory_gpu_traces.json).
step memory "memory sweep" timeout 330 python3 bench/estimate_memory_gpu.py --budget-s 270
# Preference tuning: a DPO step's peak (max_memory_reserved / allocated) and step time through
# trl's DPOTrainer (and KTO, ORPO, SimPO as time allows), random-init Qwen2.5-0.5B and a 4-layer
# Llama-3.1-8B, LoRA, bf16, against `workbench estimate` for the same settings (analytic, and the
# CPU trace committed in bench/preference_gpu_step_traces.json).
step preference "preference step" timeout 150 python3 bench/preference_gpu_step.py --budget-s 110
# GRPO: a step's peak (max_memory_reserved / allocated) and time through trl's GRPOTrainer as
# workbench/train/methods/grpo.py builds it (transformers generation, LoRA, bf16, checkpointing),
# random-init SmolLM2-360M at two settings of num_generations / max_completion_len (4 x 128, a
# generation batch of 16; 8 x 512, a generation batch of 32), against `workbench estimate` for
# the same settings: the analytic generation / training moments and the generation time guess.
step grpo "GRPO step" timeout 170 python3 bench/grpo_gpu_step.py --budget-s 120
# Issues 5 and 12: how the engine batches its three systems, timed three ways (now: sorted,
# few-shot apart, base + fine-tuned sharing calls; one adapter a call; before: all mixed in
# prompt order), in calls of 48 rows as the evaluation makes them, on a 7B-class model (random
# weights) and on the demo. "one adapter a call / now" above 1 means sharing calls pays here.
step compare-7b "compare 7B" timeout 150 python3 bench/compare_batched.py --device cuda \
  --model-config qwen2.5-7b --prompts 32 --max-new-tokens 64 --repeat 2 --batch-size 48 \
  --write "$OUT/compare_batched_7b.md"
step compare-tiny "compare tiny" timeout 90 python3 bench/compare_batched.py --device cuda --prompts 16 \
  --max-new-tokens 32 --repeat 3 --batch-size 48 --write "$OUT/compare_batched_tiny.md"
# Issue 5: the bnb4 export (GPU only) of a short demo run, with its proof.
step bnb4 "bnb4 export" timeout 120 bash -c '
  python3 -m workbench run profiles/demo.toml --set train.max_steps=20 --set eval.prompts= \
    --set train.device=cuda --runs-dir /tmp/runs >/dev/null &&
  python3 -m workbench export "$(ls -d /tmp/runs/*/ | head -1)" --format bnb4 --json > "$OUT/bnb4.json";
  cat "$OUT/bnb4.json"'
# Issue 25: training throughput (real tokens/s) and peak memory, trl's SFTTrainer used directly
# (its defaults; and packing="bfd", padding-free) against `workbench run` with train.kernels =
# none / liger / auto and FlashAttention 2 when installed, random-init SmolLM2-135M and 1.7B on
# the alpaca sample, 20 steps an arm. Arms that do not fit the budget say "not run (budget)".
step throughput "training throughput" timeout 470 python3 bench/gpu_train_throughput.py \
  --budget-s 420 --write "$OUT/gpu_train_throughput.md"
