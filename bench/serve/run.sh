#!/usr/bin/env bash
# Load-and-faults benchmark of the OpenAI-compatible server.
#   bench/serve/run.sh [DURATION_S] [SCALE_S]            in-process server on a small random Qwen3 (real vocabulary)
#   URL=http://127.0.0.1:8080 PID=1234 bench/serve/run.sh 600 30   against a running `llmarch serve` (RSS of PID)
# Writes bench/serve/results.json. Only loopback addresses are accepted.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
duration="${1:-600}"; scale="${2:-30}"
dotnet build "$here/ServeBench" -c Release -v q --nologo >/dev/null
bin="$here/ServeBench/bin/Release/net10.0/ServeBench"
if [[ -n "${URL:-}" ]]; then
  exec "$bin" run --url "$URL" --pid "${PID:-0}" --duration "$duration" --scale-seconds "$scale" --clients "${CLIENTS:-64}" --max-tokens "${MAX_TOKENS:-48}" --out "$here/results.json"
fi
model="${MODEL:-${TMPDIR:-/tmp}/llmarch-bench-qwen3-small}"
[[ -f "$model/config.json" ]] || "$bin" make-model "$model"
exec "$bin" run --model "$model" --parallel "${PARALLEL:-8}" --ctx "${CTX:-2048}" --duration "$duration" --scale-seconds "$scale" \
  --clients "${CLIENTS:-64}" --max-tokens "${MAX_TOKENS:-48}" --out "$here/results.json"
