#!/usr/bin/env bash
# Side-by-side CPU benchmark: llmarch vs llama.cpp (prebuilt, through the npm package node-llama-cpp) on the same GGUF
# files (BF16, Q8_0, Q4_0, Q4_K exported by llmarch from one random-weight model), same prompt length, generation
# length and thread count, in one run.
#   bench/peer.sh                                  # qwen3-0.6b, 512 prompt tokens, 128 generated, 2 threads, 3 repeats
#   PRESET=llama-3.2-1b QUANTS="q4_k" bench/peer.sh
#   ISA=avx2 bench/peer.sh                         # both engines on their AVX2 kernels, on any machine (see below)
#   PROMPT=4096 GEN=32 bench/peer.sh               # decode at a 4K context
# Env: PRESET, PROMPT, GEN, THREADS, REPEAT, QUANTS ("bf16 q8_0 q4_0 q4_k"), WORK (bench/work), COPY=1 (llmarch
# bench --copy), ISA (native | avx2), OUT (a file to append one JSON line per format to).
# ISA=avx2 runs llmarch with LLMARCH_ISA=avx2 and DOTNET_EnableAVX512=0 (the JIT then emits VEX code with 16 vector
# registers, as on an AVX2-only CPU), and llama.cpp from a copy of its binaries that keeps only the x86-64-v3
# ("haswell": AVX2, FMA, F16C) CPU backend, so neither uses AVX-512 even on a machine that has it.
# Machines shared with other jobs give noisy numbers: both engines report best-of and median over REPEAT runs;
# compare the same column.
set -euo pipefail
cd "$(dirname "$0")/.."
PRESET=${PRESET:-qwen3-0.6b}; PROMPT=${PROMPT:-512}; GEN=${GEN:-128}; THREADS=${THREADS:-2}; REPEAT=${REPEAT:-3}
QUANTS=${QUANTS:-"bf16 q8_0 q4_0 q4_k"}; WORK=${WORK:-bench/work}; COPY=${COPY:-0}; ISA=${ISA:-native}
NLC_VERSION=${NLC_VERSION:-3.22.1}; OUT=${OUT:-}
mkdir -p "$WORK"

if [ ! -d bench/node_modules/node-llama-cpp ] || [ ! -d bench/node_modules/@node-llama-cpp/linux-x64 ]; then
  echo "== installing llama.cpp prebuilt binaries (node-llama-cpp $NLC_VERSION, @node-llama-cpp/linux-x64)"
  npm view "@node-llama-cpp/linux-x64@$NLC_VERSION" version >/dev/null
  npm install --prefix bench --no-audit --no-fund --ignore-scripts \
    "node-llama-cpp@$NLC_VERSION" "@node-llama-cpp/linux-x64@$NLC_VERSION" >/dev/null
fi
LLAMA_BENCH=bench/llamacpp-bench.mjs
if [ "$ISA" = avx2 ]; then
  # A hard-linked copy of the npm tree whose only CPU backends are the AVX2 ("haswell") and baseline ones.
  NLC="$WORK/nlc-avx2"
  if [ ! -d "$NLC/node_modules" ]; then
    mkdir -p "$NLC" && cp -al bench/node_modules "$NLC/node_modules"
    find "$NLC/node_modules/@node-llama-cpp/linux-x64/bins" -name 'libggml-cpu-*.so' \
      ! -name 'libggml-cpu-haswell.so' ! -name 'libggml-cpu-x64.so' ! -name 'libggml-cpu-sse42.so' -delete
  fi
  cp bench/llamacpp-bench.mjs "$NLC/llamacpp-bench.mjs"
  LLAMA_BENCH="$NLC/llamacpp-bench.mjs"
  export LLMARCH_ISA=avx2 DOTNET_EnableAVX512=0
fi

echo "== building llmarch"
dotnet build src/LlmArch.Cli -c Release 2>&1 | grep -E " error |rror\(s\)" | sort -u
LLMARCH="dotnet src/LlmArch.Cli/bin/Release/net10.0/llmarch.dll"

MODEL="$WORK/$PRESET-bf16"
[ -f "$MODEL/model.safetensors" ] || $LLMARCH init --preset "$PRESET" --random --dtype bf16 --seed 0 --out "$MODEL"
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); AVX512=$(grep -q avx512f /proc/cpuinfo && echo yes || echo no)
echo "== machine: $CPU, $(nproc) cores, avx512f: $AVX512; kernels: $ISA"

for Q in $QUANTS; do
  GGUF="$WORK/$PRESET-$Q.gguf"
  [ -f "$GGUF" ] || $LLMARCH export --model "$MODEL" --format gguf --quant "$Q" --out "$GGUF" >/dev/null
  echo "== $PRESET $Q: prompt $PROMPT, gen $GEN, threads $THREADS, repeats $REPEAT (both engines read $GGUF)"
  LL=$(node "$LLAMA_BENCH" "$GGUF" "$PROMPT" "$GEN" "$THREADS" "$REPEAT" 2>/dev/null | tail -1)
  LA=$($LLMARCH bench --model "$GGUF" --prompt-tokens "$PROMPT" --gen-tokens "$GEN" --threads "$THREADS" \
        --repeat "$REPEAT" --json $([ "$COPY" = 1 ] && echo --copy))
  node -e '
    const [ll, la, q, isa, out] = [JSON.parse(process.argv[1]), JSON.parse(process.argv[2]), process.argv[3], process.argv[4], process.argv[5]];
    const f = (x) => x.toFixed(2).padStart(9);
    console.log(`                      ${"llama.cpp".padStart(9)} ${"llmarch".padStart(9)}    ratio`);
    for (const [k, name] of [["prefill_tokens_per_s", "prefill tok/s best"], ["prefill_tokens_per_s_median", "prefill tok/s median"],
                             ["decode_tokens_per_s", "decode tok/s best"], ["decode_tokens_per_s_median", "decode tok/s median"]])
      console.log(`${name.padEnd(22)}${f(ll[k])} ${f(la[k])}  ${(la[k] / ll[k]).toFixed(2)}x`);
    console.log(`llmarch (${la.weights}, ${la.isa}): decode ${la.decode_gb_per_s.toFixed(1)} GB/s, prefill ${la.prefill_gflop_per_s.toFixed(1)} GFLOP/s, ` +
                `peak RSS ${(la.peak_rss_bytes / 1e6).toFixed(0)} MB, alloc/token ${la.alloc_bytes_per_token.toFixed(0)} B, load ${la.load_s.toFixed(2)} s (llama.cpp load ${ll.load_s.toFixed(2)} s)`);
    if (out) require("fs").appendFileSync(out, JSON.stringify({ format: q, isa, llamacpp: ll, llmarch: la }) + "\n");
  ' "$LL" "$LA" "$Q" "$ISA" "$OUT"
done
echo "== memory read bandwidth ($THREADS threads)"
$LLMARCH bench --memory --threads "$THREADS"
