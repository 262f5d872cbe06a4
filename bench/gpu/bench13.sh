#!/usr/bin/env bash
# Issue 13 benchmarks on the GPU machine, beside the peers, in one run: random bf16 models of Qwen3-0.6B,
# Llama-3.2-1B and Qwen3-8B shapes (llmarch init --random), llmarch bench --device cuda --dtype bf16 at prompt 512
# (decode batch 1, 8, 32, 64) and prompt 4096 (prefill and decode at that context), the device copy bandwidth, the
# PyTorch CUDA-graph decode loop and HF transformers eager generate() on the same config.json.
# Usage: bench13.sh [presets...]  (default: qwen3-0.6b llama-3.2-1b qwen3-8b); JSON lines to $OUT/bench13.jsonl.
set -u
L=.gpu/llmarch
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
J="$OUT/bench13.jsonl"
presets=${*:-qwen3-0.6b llama-3.2-1b qwen3-8b}
"$L" bench --memory --device cuda --json | tee -a "$J"
for p in $presets; do
  d=/tmp/m-$p
  [ -f "$d/model.safetensors" ] || "$L" init --preset "$p" --random --out "$d" >&2
  "$L" bench --model "$d" --device cuda --dtype bf16 --prompt-tokens 512 --gen-tokens 128 --repeat 3 --json | tr -d '\n ' | sed 's/$/\n/' | sed "s/^{/{\"preset\":\"$p\",\"case\":\"p512\",/" | tee -a "$J"
  for b in 8 32 64; do
    "$L" bench --model "$d" --device cuda --dtype bf16 --prompt-tokens 512 --gen-tokens 64 --repeat 2 --batch $b --json | tr -d '\n ' | sed 's/$/\n/' | sed "s/^{/{\"preset\":\"$p\",\"case\":\"b$b\",/" | tee -a "$J"
  done
  "$L" bench --model "$d" --device cuda --dtype bf16 --prompt-tokens 4096 --gen-tokens 64 --repeat 2 --json | tr -d '\n ' | sed 's/$/\n/' | sed "s/^{/{\"preset\":\"$p\",\"case\":\"p4096\",/" | tee -a "$J"
done
