#!/usr/bin/env bash
# Second GPU call: the NaN fixes in the conformance harness, the frontier model checks, then benchmarks: the dense
# presets again after the merge (bf16 and Q8_0), and issue 14's MoE rows that did not fit before (FP8 DeepSeek-V3, Qwen3-Next).
set -u
L=.gpu/llmarch; chmod +x $L
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
T0=$(date +%s)
timeout 200 $L check-backend --device cuda > $OUT/check-backend.txt 2>&1; echo "check-backend exit $?"; grep -E "^FAIL" $OUT/check-backend.txt | head -10; tail -1 $OUT/check-backend.txt
timeout 200 $L gpu-check --op none --models "$(ls -d tests/fixtures/frontier/*/ .gpu/ff/*/ | paste -sd,)" > "$OUT/models-frontier.txt" 2>&1; grep -E "model|passed|FAILED" "$OUT/models-frontier.txt" | cut -c1-220
echo "t=$(( $(date +%s) - T0 ))s"
J=$OUT/bench.jsonl
$L bench --memory --device cuda --json >> $J; tail -1 $J
for p in qwen3-0.6b llama-3.2-1b; do
  $L init --preset $p --random --out /tmp/m-$p > /dev/null
  for q in bf16 q8_0; do
    timeout 120 $L bench --model /tmp/m-$p --device cuda --dtype bf16 --quant $q --prompt-tokens 512 --gen-tokens 128 --repeat 2 --json 2>>$OUT/bench.err | tr -d '\n ' | sed 's/$/\n/' | sed "s/^{/{\"preset\":\"$p\",\"quant\":\"$q\",/" | tee -a $J | cut -c1-600
  done
done
echo "t=$(( $(date +%s) - T0 ))s"
timeout 200 $L bench --device cuda --dtype bf16 --random --json --preset deepseek-v3 --weights fp8 --layers 4 --prompt-tokens 512 --gen-tokens 32 --repeat 1 2>>$OUT/bench.err | tr -d '\n ' | sed 's/$/\n/' | tee -a $J | cut -c1-700
echo "t=$(( $(date +%s) - T0 ))s"
timeout 220 $L bench --device cuda --dtype bf16 --random --json --preset qwen3-next-80b-a3b --weights fp8 --prompt-tokens 512 --gen-tokens 32 --repeat 1 2>>$OUT/bench.err | tr -d '\n ' | sed 's/$/\n/' | tee -a $J | cut -c1-700
echo "t=$(( $(date +%s) - T0 ))s"
tail -5 $OUT/bench.err
