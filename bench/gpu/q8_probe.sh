#!/usr/bin/env bash
set -u
L=.gpu/llmarch; chmod +x $L
P=1,2,3,4,5,6
for m in gpt_oss_mxfp4 llama3; do
  $L export --model tests/fixtures/hf/$m --quant q8_0 --out /tmp/$m-q8.gguf > /dev/null 2>&1
  $L export --model tests/fixtures/hf/$m --quant f32 --out /tmp/$m-f32.gguf > /dev/null 2>&1
  echo "$m f32  cpu    : $($L run --model /tmp/$m-f32.gguf --prompt-ids $P --max-new-tokens 10 --greedy 2>/dev/null)"
  echo "$m q8   cpu    : $($L run --model /tmp/$m-q8.gguf --prompt-ids $P --max-new-tokens 10 --greedy 2>/dev/null)"
  echo "$m q8   cpu sc : $(LLMARCH_ISA=scalar $L run --model /tmp/$m-q8.gguf --prompt-ids $P --max-new-tokens 10 --greedy 2>/dev/null)"
  echo "$m q8   gpu    : $($L run --model /tmp/$m-q8.gguf --prompt-ids $P --max-new-tokens 10 --greedy --device cuda 2>/dev/null)"
  echo "$m q8   gpu nf : $(LLMARCH_CUDA_FUSE=0 LLMARCH_CUDA_GRAPHS=0 $L run --model /tmp/$m-q8.gguf --prompt-ids $P --max-new-tokens 10 --greedy --device cuda 2>/dev/null)"
  echo "$m q8ld cpu    : $($L run --model tests/fixtures/hf/$m --quant q8_0 --prompt-ids $P --max-new-tokens 10 --greedy 2>/dev/null)"
  echo "$m q8ld gpu    : $($L run --model tests/fixtures/hf/$m --quant q8_0 --prompt-ids $P --max-new-tokens 10 --greedy --device cuda 2>/dev/null)"
  echo "$m q8   gpu 1tk: $($L run --model /tmp/$m-q8.gguf --prompt-ids 1 --max-new-tokens 10 --greedy --device cuda 2>/dev/null) | cpu $($L run --model /tmp/$m-q8.gguf --prompt-ids 1 --max-new-tokens 10 --greedy 2>/dev/null)"
done
timeout 120 $L gpu-check --op matmul 2>&1 | grep -i "q8\|fail" | head -20
