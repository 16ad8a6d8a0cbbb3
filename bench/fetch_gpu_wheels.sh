#!/usr/bin/env bash
# Wheels the GPU machine lacks (its image has torch, transformers, accelerate, pandas, pyarrow,
# xxhash, sacrebleu, nvidia-ml-py; not bitsandbytes, trl, datasets, tomli-w), for Python 3.12
# x86-64, into .whl/ (git-ignored locally). ~47 MB: with the repo it stays under the device
# tool's 64 MiB carry limit. Run here, then carry `.whl` (see bench/gpu_checks.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
# liger-kernel: pure Python over triton, which torch's CUDA build already brings
for pkg in bitsandbytes==0.50.2 trl==1.16.0 peft==0.21.2 datasets==5.2.0 dill==0.4.1 \
           multiprocess==0.70.19 tomli-w==1.2.0 liger-kernel==0.8.5; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "$pkg"
done
# The GPU machine has no network and no ~/.cache: bench/gpu_train_throughput.py reads the
# SmolLM2 tokenizer (no weights) and the alpaca sample from .whl/assets when they are here,
# gzipped (~1 MB: the carry limit is close).
mkdir -p .whl/assets/smollm2-135m
smol="$HOME/.cache/workbench/models/SmolLM2-135M-Instruct"
for f in config.json tokenizer.json tokenizer_config.json chat_template.jinja; do
  if [ -f "$smol/$f" ]; then gzip -9c "$smol/$f" > ".whl/assets/smollm2-135m/$f.gz"; fi
done
for alpaca in ../shared/data/alpaca_en_demo.json /work/shared/data/alpaca_en_demo.json; do
  if [ -f "$alpaca" ]; then gzip -9c "$alpaca" > .whl/assets/alpaca_en_demo.json.gz; break; fi
done
du -sh .whl
