#!/usr/bin/env bash
# GPU correctness run (one call of the device tool): op-by-op conformance of the CUDA backend against the scalar
# reference (one process per op group, so a faulting kernel cannot hide the others), every fixture through
# `llmarch verify --device cuda`, and per fixture: graph replay vs eager (bit for bit), fused vs plain kernels, CUDA vs
# CPU logits and greedy tokens. Expects the published binary at .gpu/llmarch (repository root = working directory).
# Logs go to $OUT.
set -u
L=.gpu/llmarch
chmod +x "$L"
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv 2>&1 | tee "$OUT/smi.txt"
ops="unary binary glu cast rms_norm layer_norm softmax top_k reduce gather take_along scatter_add slice concat transpose matmul batch_matmul matmul_by_id rope attention cache_write causal_conv1d delta_rule altup row_stats fusion"
for op in $ops; do
  LLMARCH_CUDA_SYNC=1 timeout 120 "$L" gpu-check --op "$op" >> "$OUT/opcheck.txt" 2>&1 || echo "gpu-check --op $op exited $?" >> "$OUT/opcheck.txt"
done
grep -E "^(PASS|FAIL)|^     |exited|error" "$OUT/opcheck.txt" | head -80
timeout 400 "$L" verify --device cuda tests/fixtures/hf/* > "$OUT/verify.txt" 2>&1; echo "verify exit $?" >> "$OUT/verify.txt"
cat "$OUT/verify.txt"
timeout 400 "$L" gpu-check --op none --models "$(ls -d tests/fixtures/hf/* | paste -sd,)" > "$OUT/models.txt" 2>&1
grep -E "model|passed|FAILED|error" "$OUT/models.txt"
