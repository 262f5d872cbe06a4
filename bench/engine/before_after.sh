#!/usr/bin/env bash
# CPU speed before and after a change, side by side in one run: builds the CLI at two commits, then runs
# `llmarch bench` on the same model alternately (A B A B ...) for BF16 and Q8_0, and prints best/median of each.
# usage: bench/engine/before_after.sh BASE_COMMIT [MODEL_DIR] [ROUNDS]
# MODEL_DIR defaults to a random Qwen3-0.6B-shaped BF16 model made with `llmarch init` (1.2 GB, once).
set -euo pipefail
base=${1:?base commit}; model=${2:-/tmp/llmarch-q06}; rounds=${3:-3}
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
git -C "$root" worktree add -q "$work/base" "$base"
trap 'git -C "$root" worktree remove --force "$work/base"; rm -rf "$work"' EXIT
dotnet build "$work/base/src/LlmArch.Cli" -c Release -v q -nologo >/dev/null
dotnet build "$root/src/LlmArch.Cli" -c Release -v q -nologo >/dev/null
A="$work/base/src/LlmArch.Cli/bin/Release/net10.0/llmarch.dll"; B="$root/src/LlmArch.Cli/bin/Release/net10.0/llmarch.dll"
[ -d "$model" ] || dotnet "$B" init --preset qwen3-0.6b --random --dtype bf16 --out "$model" >/dev/null
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(grep -o -m1 avx512f /proc/cpuinfo || echo 'no avx512f'); $(nproc) cores"
for quant in bf16 q8_0; do
  for r in $(seq "$rounds"); do
    for side in A B; do
      dll=${!side}
      dotnet "$dll" bench --model "$model" --quant "$quant" --prompt-tokens 512 --gen-tokens 64 --repeat 1 --json \
        | python3 -c "import json,sys; d=json.load(sys.stdin); print('$quant $side', d['prefill_tokens_per_s'], d['decode_tokens_per_s'])"
    done
  done
done | tee "$work/raw.txt"
python3 - "$work/raw.txt" <<'PY'
import sys, statistics as st
rows = {}
for line in open(sys.argv[1]):
    q, side, pre, dec = line.split(); rows.setdefault((q, side), []).append((float(pre), float(dec)))
print(f"{'':8} {'prefill before':>16} {'prefill after':>16} {'decode before':>16} {'decode after':>16}")
for q in ('bf16', 'q8_0'):
    a, b = rows[(q, 'A')], rows[(q, 'B')]
    f = lambda xs, i: f"{max(x[i] for x in xs):7.1f}/{st.median(x[i] for x in xs):7.1f}"
    print(f"{q:8} {f(a,0):>16} {f(b,0):>16} {f(a,1):>16} {f(b,1):>16}   (best/median tok/s)")
PY
