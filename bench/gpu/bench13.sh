#!/usr/bin/env bash
# Issue 13 benchmarks on the GPU machine: random bf16 models of Qwen3-0.6B, Llama-3.2-1B and Qwen3-8B shapes
# (llmarch init --random), llmarch bench --device cuda --dtype bf16 at prompt 512 (decode batch 1, 8, 32, 64) and
# prompt 4096 (prefill and decode at that context), and the device copy bandwidth. JSON lines to $OUT/bench13.jsonl.
# Usage: bench13.sh [presets...]  (default: qwen3-0.6b llama-3.2-1b qwen3-8b). The peers: peers13.sh.
set -u
L=.gpu/llmarch
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
J="$OUT/bench13.jsonl"
presets=${*:-qwen3-0.6b llama-3.2-1b qwen3-8b}
one() { # preset case args...
  local p=$1 c=$2; shift 2
  "$L" bench --model /tmp/m-$p --device cuda --dtype bf16 --json "$@" 2>>"$OUT/bench13.err" | tr -d '\n ' | sed 's/$/\n/' | sed "s/^{/{\"preset\":\"$p\",\"case\":\"$c\",/" >> "$J"
}
"$L" bench --memory --device cuda --json >> "$J"
for p in $presets; do
  [ -f "/tmp/m-$p/model.safetensors" ] || "$L" init --preset "$p" --random --out "/tmp/m-$p" > /dev/null
  one "$p" p512 --prompt-tokens 512 --gen-tokens 128 --repeat 2
  for b in 8 32 64; do one "$p" "b$b" --prompt-tokens 512 --gen-tokens 32 --repeat 1 --batch $b; done
  one "$p" p4096 --prompt-tokens 4096 --gen-tokens 32 --repeat 1
done
