#!/usr/bin/env bash
# The peers of bench13.sh on the same config.json files: the PyTorch decode step in a CUDA graph, and HF eager.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
presets=${*:-qwen3-0.6b llama-3.2-1b qwen3-8b}
cfgs=""; for p in $presets; do cfgs="$cfgs /tmp/m-$p/config.json"; done
PYTHONUNBUFFERED=1 timeout 200 python3 .gpu/torch_graph_decode.py $cfgs 2>&1 | grep '^{' | tee -a "$OUT/peers13.jsonl"
for p in $presets; do
  PYTHONUNBUFFERED=1 timeout 120 python3 .gpu/hf_generate.py /tmp/m-$p/config.json 512 32 1 2>&1 | grep '^{' | tee -a "$OUT/peers13.jsonl"
done
