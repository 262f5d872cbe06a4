#!/usr/bin/env bash
# Third GPU call: checks after the kernel rework, per-kernel profile of decode steps, and decode/prefill benches.
set -u
L=.gpu/llmarch
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
bash .gpu/check.sh > /dev/null 2>&1
echo "ops: $(grep -c '^PASS' $OUT/opcheck.txt) groups pass"; grep -E "^(FAIL|     )|exited" "$OUT/opcheck.txt" | head -20
grep -vE "^PASS" "$OUT/verify.txt"; grep -E "^FAIL|error" "$OUT/models.txt" | cut -c1-300; grep -c "^PASS model" "$OUT/models.txt"
for p in qwen3-0.6b qwen3-8b; do
  "$L" init --preset "$p" --random --out /tmp/m-$p > /dev/null
  LLMARCH_CUDA_PROFILE=1 "$L" bench --model /tmp/m-$p --device cuda --dtype bf16 --prompt-tokens 512 --gen-tokens 32 --repeat 1 2> "$OUT/profile-$p.txt" > /dev/null
  echo "== profile $p (decode 32 + prefill 512, eager)"; head -14 "$OUT/profile-$p.txt" | cut -c1-160
  "$L" bench --model /tmp/m-$p --device cuda --dtype bf16 --prompt-tokens 512 --gen-tokens 128 --repeat 2 | grep -E "prefill|decode|GPU" | tee -a "$OUT/bench3.txt"
  "$L" bench --model /tmp/m-$p --device cuda --dtype bf16 --prompt-tokens 4096 --gen-tokens 32 --repeat 1 | grep -E "prefill|decode" | tee -a "$OUT/bench3.txt"
done
"$L" bench --preset qwen3-30b-a3b --random --device cuda --dtype bf16 --prompt-tokens 512 --gen-tokens 64 --repeat 2 2>&1 | grep -E "prefill|decode|GPU|error" | tee -a "$OUT/bench3.txt"
