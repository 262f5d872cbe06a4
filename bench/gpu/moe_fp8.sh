#!/usr/bin/env bash
# Issue 14's Qwen3-Next-80B-A3B row (FP8, every layer, weights generated in memory), and DeepSeek-V3 at 8 layers.
set -u
L=.gpu/llmarch; chmod +x $L
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
T0=$(date +%s)
J=$OUT/bench.jsonl
timeout 330 $L bench --device cuda --dtype bf16 --random --json --preset qwen3-next-80b-a3b --weights fp8 --prompt-tokens 512 --gen-tokens 64 --repeat 1 2>>$OUT/bench.err | tr -d '\n ' | sed 's/$/\n/' | tee -a $J | cut -c1-1200
echo "t=$(( $(date +%s) - T0 ))s"
timeout 200 $L bench --device cuda --dtype bf16 --random --json --preset deepseek-v3 --weights fp8 --layers 8 --prompt-tokens 512 --gen-tokens 32 --repeat 1 2>>$OUT/bench.err | tr -d '\n ' | sed 's/$/\n/' | tee -a $J | cut -c1-1200
echo "t=$(( $(date +%s) - T0 ))s"
tail -3 $OUT/bench.err
