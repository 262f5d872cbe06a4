#!/usr/bin/env bash
# One GPU call after the merge of the CPU (issue 16) and CUDA (13/14) work: op checks, every fixture (dense, MoE,
# MLA, linear attention, frontier), check-backend, graph/fusion/CPU model checks, Q8_0/Q4 weights on the GPU, MTP.
set -u
L=.gpu/llmarch; chmod +x $L
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
T0=$(date +%s)
bash .gpu/check.sh > /dev/null 2>&1
echo "ops: $(grep -c '^PASS' $OUT/opcheck.txt) groups pass"; grep -E "^(FAIL|     )|exited" "$OUT/opcheck.txt" | head -10
echo "fixtures: $(grep -c '^PASS' $OUT/verify.txt) pass"; grep -vE "^PASS|verify exit 0" "$OUT/verify.txt" | head
echo "models: $(grep -c '^PASS model' $OUT/models.txt) pass"; grep -E "^FAIL|rror" "$OUT/models.txt" | cut -c1-250 | head
echo "t=$(( $(date +%s) - T0 ))s"
timeout 200 $L check-backend --device cuda > $OUT/check-backend.txt 2>&1; echo "check-backend exit $?"; grep -c "^PASS\|^  PASS\| ok" $OUT/check-backend.txt; grep -iE "fail" $OUT/check-backend.txt | head -10; tail -3 $OUT/check-backend.txt
echo "t=$(( $(date +%s) - T0 ))s"
timeout 200 $L verify --device cuda tests/fixtures/frontier/* .gpu/ff/* > $OUT/verify-frontier.txt 2>&1; echo "verify frontier exit $?"; cat $OUT/verify-frontier.txt
timeout 200 $L verify --device cuda --dtype bf16 tests/fixtures/hf/qwen3 tests/fixtures/hf/llama3 tests/fixtures/hf/gemma3 > $OUT/verify-bf16.txt 2>&1; cat $OUT/verify-bf16.txt
timeout 200 $L gpu-check --op none --models "$(ls -d tests/fixtures/frontier/* .gpu/ff/* | paste -sd,)" > "$OUT/models-frontier.txt" 2>&1; echo "frontier models: $(grep -c '^PASS model' $OUT/models-frontier.txt) pass"; grep -E "^FAIL|rror" "$OUT/models-frontier.txt" | cut -c1-250 | head
echo "t=$(( $(date +%s) - T0 ))s"
for m in qwen3 llama3 qwen3_moe; do for q in q8_0 q4_0 q4_k; do
  a=$($L run --model tests/fixtures/hf/$m --quant $q --prompt-ids 1,2,3,4,5,6 --max-new-tokens 16 --greedy 2>$OUT/q-$m-$q-cpu.err)
  b=$($L run --model tests/fixtures/hf/$m --quant $q --prompt-ids 1,2,3,4,5,6 --max-new-tokens 16 --greedy --device cuda 2>$OUT/q-$m-$q-gpu.err)
  echo "$m $q cpu: $a | gpu: $b $( [ "$a" = "$b" ] && echo SAME || echo DIFF)"; tail -1 $OUT/q-$m-$q-gpu.err | cut -c1-200
done; done
$L export --model tests/fixtures/hf/qwen3 --quant q8_0 --out /tmp/q.gguf > /dev/null 2>&1
echo "gguf q8_0 cpu: $($L run --model /tmp/q.gguf --prompt-ids 1,2,3,4,5,6 --max-new-tokens 16 --greedy 2>/dev/null) gpu: $($L run --model /tmp/q.gguf --prompt-ids 1,2,3,4,5,6 --max-new-tokens 16 --greedy --device cuda 2>&1 | tail -2 | tr '\n' ' ')"
P=17,40,3,250,8,101,4,77
echo "mtp cuda  : $("$L" run --model .gpu/mtp --prompt-ids $P --max-new-tokens 32 --speculative mtp --draft-tokens 2 --device cuda 2>"$OUT/mtp.txt")"; cat "$OUT/mtp.txt"
echo "greedy cpu : $("$L" run --model .gpu/mtp --prompt-ids $P --max-new-tokens 32 --greedy 2>/dev/null)"
echo "t=$(( $(date +%s) - T0 ))s"
