#!/usr/bin/env bash
# A first look at speed (same call as check.sh): copy bandwidth and Qwen3-0.6B (random bf16) decode, graphs on and off.
set -u
L=.gpu/llmarch
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
"$L" bench --memory --device cuda 2>&1 | tee -a "$OUT/bench.txt"
"$L" init --preset qwen3-0.6b --random --out /tmp/q06 2>&1 | tee -a "$OUT/bench.txt"
"$L" bench --model /tmp/q06 --device cuda --prompt-tokens 512 --gen-tokens 128 --repeat 2 2>&1 | tee -a "$OUT/bench.txt"
LLMARCH_CUDA_GRAPHS=0 "$L" bench --model /tmp/q06 --device cuda --prompt-tokens 512 --gen-tokens 64 --repeat 1 2>&1 | tee -a "$OUT/bench.txt"
LLMARCH_CUDA_FUSE=0 "$L" bench --model /tmp/q06 --device cuda --prompt-tokens 512 --gen-tokens 64 --repeat 1 2>&1 | tee -a "$OUT/bench.txt"
"$L" bench --model /tmp/q06 --device cuda --dtype bf16 --prompt-tokens 512 --gen-tokens 64 --repeat 1 2>&1 | tee -a "$OUT/bench.txt"
