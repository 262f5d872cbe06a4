#!/usr/bin/env bash
# Does llmarch read a GGUF file exactly as llama.cpp does? Both engines predict the next token at every position of
# one teacher-forced 256-token sequence on the same GGUF (BF16, Q8_0, Q4_0, Q4_K), and we count the positions where
# their top-1 tokens agree (goal: >= 99%). Needs npm (node-llama-cpp's prebuilt llama.cpp), so it is not in the CI suite.
#   bench/agree.sh                      # qwen3-0.6b shapes
#   PRESET=llama-3.2-1b QUANTS="q4_k" bench/agree.sh
# The model: random weights give flat logits (every token about as likely, top-1 decided by noise), so the check uses
# random N(0, STD^2) weights with the embedding table (tied to the LM head in Qwen3-0.6B) scaled to N(0, EMBED_STD^2):
# the logits then spread over several units and each position has a clear favourite that depends on the whole
# network. Env: PRESET, SEQ (256), THREADS (2), STD (0.02), EMBED_STD (0.25), SEED (3), QUANTS, WORK (bench/work).
set -euo pipefail
cd "$(dirname "$0")/.."
PRESET=${PRESET:-qwen3-0.6b}; SEQ=${SEQ:-256}; THREADS=${THREADS:-2}; STD=${STD:-0.02}; EMBED_STD=${EMBED_STD:-0.5}
SEED=${SEED:-3}; QUANTS=${QUANTS:-"bf16 q8_0 q4_0 q4_k"}; WORK=${WORK:-bench/work}; NLC_VERSION=${NLC_VERSION:-3.22.1}
MODES=${MODES:-"decode prefill"}
mkdir -p "$WORK"
if [ ! -d bench/node_modules/node-llama-cpp ] || [ ! -d bench/node_modules/@node-llama-cpp/linux-x64 ]; then
  npm install --prefix bench --no-audit --no-fund --ignore-scripts \
    "node-llama-cpp@$NLC_VERSION" "@node-llama-cpp/linux-x64@$NLC_VERSION" >/dev/null
fi
dotnet build src/LlmArch.Cli -c Release 2>&1 | grep -E " error |rror\(s\)" | sort -u
dotnet build bench/agree -c Release 2>&1 | grep -E " error |rror\(s\)" | sort -u
LLMARCH="dotnet src/LlmArch.Cli/bin/Release/net10.0/llmarch.dll"
AGREE="dotnet bench/agree/bin/Release/net10.0/Agree.dll"
MODEL="$WORK/agree-$PRESET-s$SEED-$STD-$EMBED_STD"
[ -f "$MODEL/model.safetensors" ] || $AGREE make "$PRESET" "$MODEL" "$SEED" "$STD" "$EMBED_STD"
node -e "let s=$SEED*7919+1; const r=()=>{s=(s*1103515245+12345)%2147483648; return s;}; \
  console.log(JSON.stringify(Array.from({length: $SEQ}, () => 256 + r() % 30000)))" > "$WORK/agree-ids.json"
for Q in $QUANTS; do
  GGUF="$MODEL-$Q.gguf"
  [ -f "$GGUF" ] || $LLMARCH export --model "$MODEL" --format gguf --quant "$Q" --out "$GGUF" >/dev/null
  node bench/agree.mjs "$GGUF" "$WORK/agree-ids.json" "$THREADS" 2>/dev/null > "$WORK/agree-llamacpp-$Q.json"
  for MODE in $MODES; do
    $AGREE logits "$GGUF" "$WORK/agree-ids.json" "$WORK/agree-llmarch-$Q-$MODE.json" "$MODE"
    node bench/agree-compare.mjs "$WORK/agree-llamacpp-$Q.json" "$WORK/agree-llmarch-$Q-$MODE.json" "$Q $MODE" "$WORK/agree-ids.json" | head -1
  done
done
