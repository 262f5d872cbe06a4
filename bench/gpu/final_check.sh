#!/usr/bin/env bash
# Final check of main on the GPU: every fixture, and GGUF exports of the MoE/MLA/MXFP4 fixtures on the GPU vs the CPU.
set -u
L=.gpu/llmarch; chmod +x $L
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
timeout 300 $L verify --device cuda tests/fixtures/hf/* tests/fixtures/frontier/* .gpu/ff/* > $OUT/verify.txt 2>&1; echo "verify exit $?: $(grep -c '^PASS' $OUT/verify.txt) PASS"; grep -v '^PASS' $OUT/verify.txt | head
for m in gpt_oss_mxfp4 deepseek_v3 glm4_moe gpt_oss qwen3_moe; do
  for q in f32 q8_0; do
    $L export --model tests/fixtures/hf/$m --quant $q --out /tmp/$m-$q.gguf > /dev/null 2>$OUT/exp-$m-$q.err || { echo "$m $q export failed: $(tail -1 $OUT/exp-$m-$q.err)"; continue; }
    a=$($L run --model /tmp/$m-$q.gguf --prompt-ids 1,2,3,4,5,6 --max-new-tokens 12 --greedy 2>/dev/null)
    b=$($L run --model /tmp/$m-$q.gguf --prompt-ids 1,2,3,4,5,6 --max-new-tokens 12 --greedy --device cuda 2>$OUT/g-$m-$q.err)
    echo "$m $q gguf cpu: $a | gpu: $b $( [ "$a" = "$b" ] && echo SAME || echo DIFF) $(tail -1 $OUT/g-$m-$q.err | cut -c1-120)"
  done
done
