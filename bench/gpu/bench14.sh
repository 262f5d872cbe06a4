#!/usr/bin/env bash
# Issue 14 benchmarks: MoE presets with weights generated in memory (bench --preset NAME --random), batch 1 and 32 at
# prompt 512: Qwen3-30B-A3B (bf16), gpt-oss-20b (MXFP4 experts as its config says), DeepSeek-V3 truncated to 4 and 8
# layers in FP8 (per-layer time from the difference), Qwen3-Next-80B-A3B in FP8. JSON lines to $OUT/bench14.jsonl.
set -u
L=.gpu/llmarch
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
J="$OUT/bench14.jsonl"
one() { # label args...
  local c=$1; shift
  timeout 200 "$L" bench --device cuda --dtype bf16 --random --json "$@" 2>>"$OUT/bench14.err" | tr -d '\n ' | sed 's/$/\n/' | sed "s/^{/{\"case\":\"$c\",/" | tee -a "$J" | cut -c1-400
}
one q30-b1 --preset qwen3-30b-a3b --prompt-tokens 512 --gen-tokens 64 --repeat 1
one q30-b32 --preset qwen3-30b-a3b --prompt-tokens 512 --gen-tokens 16 --repeat 1 --batch 32
one oss20-b1 --preset gpt-oss-20b --prompt-tokens 512 --gen-tokens 64 --repeat 1
one oss20-b32 --preset gpt-oss-20b --prompt-tokens 512 --gen-tokens 16 --repeat 1 --batch 32
one ds4-b1 --preset deepseek-v3 --weights fp8 --layers 4 --prompt-tokens 512 --gen-tokens 32 --repeat 1
one ds8-b1 --preset deepseek-v3 --weights fp8 --layers 8 --prompt-tokens 512 --gen-tokens 32 --repeat 1
one qnext-b1 --preset qwen3-next-80b-a3b --weights fp8 --prompt-tokens 512 --gen-tokens 32 --repeat 1
