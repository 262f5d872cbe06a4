#!/usr/bin/env bash
# Final GPU call for issue 13: correctness (op groups, fixtures, graph/fusion/CPU model checks, MTP speculative vs
# greedy), a synchronous MoE debug pass, then the issue 13 benchmark table beside the peers.
set -u
L=.gpu/llmarch
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
T0=$(date +%s)
bash .gpu/check.sh > /dev/null 2>&1
echo "ops: $(grep -c '^PASS' $OUT/opcheck.txt)/26 groups pass"; grep -E "^(FAIL|     )|exited" "$OUT/opcheck.txt" | head -10
echo "fixtures: $(grep -c '^PASS' $OUT/verify.txt)/21 pass"; grep -vE "^PASS|verify exit 0" "$OUT/verify.txt"
echo "models: $(grep -c '^PASS model' $OUT/models.txt)/21 pass"; grep -E "^FAIL|rror" "$OUT/models.txt" | cut -c1-250
grep "PASS model qwen3:" "$OUT/models.txt"
P=17,40,3,250,8,101,4,77
echo "mtp cuda  : $("$L" run --model .gpu/mtp --prompt-ids $P --max-new-tokens 32 --speculative mtp --draft-tokens 2 --device cuda 2>"$OUT/mtp.txt")"; cat "$OUT/mtp.txt"
echo "greedy cuda: $("$L" run --model .gpu/mtp --prompt-ids $P --max-new-tokens 32 --greedy --device cuda 2>/dev/null)"
echo "greedy cpu : $("$L" run --model .gpu/mtp --prompt-ids $P --max-new-tokens 32 --greedy 2>/dev/null)"
LLMARCH_CUDA_SYNC=1 timeout 120 "$L" bench --preset qwen3-30b-a3b --random --layers 2 --device cuda --dtype bf16 --prompt-tokens 64 --gen-tokens 4 --repeat 1 2>&1 | grep -E "decode|rror|at LlmArch" | head -4
echo "t=$(( $(date +%s) - T0 ))s"
bash .gpu/bench13.sh > /dev/null 2>&1; cut -c1-160 "$OUT/bench13.jsonl" | head -3
echo "t=$(( $(date +%s) - T0 ))s"
bash .gpu/peers13.sh 2>&1 | cut -c1-300
echo "t=$(( $(date +%s) - T0 ))s"
