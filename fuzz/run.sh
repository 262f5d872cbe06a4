#!/usr/bin/env bash
# Fuzzes LlmArch's parsers with SharpFuzz + AFL++: fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
#   targets: the keys of fuzz/LlmArch.Fuzz/Targets.cs (default: all); seeds: fuzz/corpus/TARGET (built from the fixtures
#   by make_corpus.py when missing, with AFL dictionaries in fuzz/dict). Each target runs for SECONDS (default 600); then its crashes and hangs are replayed
#   uninstrumented and a summary line is printed: target, executions, crashes, hangs. Exit 1 when any target found one.
# Needs: afl++ (apt-get install afl++), the sharpfuzz tool (dotnet tool install --global SharpFuzz.CommandLine --version 2.3.0).
# To add a target (GGUF, the server's request parser): one entry in Targets.cs and a seed folder fuzz/corpus/NAME.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
secs="${1:-600}"; shift || true
out="${FUZZ_OUT:-$here/out}"
bin="$out/bin"
export PATH="$PATH:$HOME/.dotnet/tools"

command -v afl-fuzz >/dev/null || { echo "fuzz: afl-fuzz not found (apt-get install afl++)" >&2; exit 2; }
command -v sharpfuzz >/dev/null || { echo "fuzz: sharpfuzz not found (dotnet tool install --global SharpFuzz.CommandLine --version 2.3.0)" >&2; exit 2; }
[ -d "$here/corpus" ] && [ -d "$here/dict" ] || python3 "$here/make_corpus.py"

# Build, then instrument the library under test (not the harness, not the framework): AFL sees LlmArch.Core's branches.
# Replays run on an uninstrumented copy: instrumented code writes to AFL's shared memory, which only exists under afl-fuzz.
plain="$out/plain"
rm -rf "$bin" "$plain"
dotnet publish "$here/LlmArch.Fuzz/LlmArch.Fuzz.csproj" -c Release -o "$bin" --nologo -v q >/dev/null
cp -r "$bin" "$plain"
sharpfuzz "$bin/LlmArch.Core.dll" >/dev/null

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(grep -oE '^\s*\["[a-z0-9_-]+"\] =' "$here/LlmArch.Fuzz/Targets.cs" | grep -oE '[a-z0-9_-]+')
fi

export AFL_SKIP_BIN_CHECK=1 AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1
export DOTNET_TieredPGO=0 DOTNET_TC_QuickJitForLoops=1 DOTNET_gcServer=0
status=0
summary=()
for t in "${targets[@]}"; do
  [ -d "$here/corpus/$t" ] || { echo "fuzz: no seeds in corpus/$t" >&2; exit 2; }
  rm -rf "$out/findings/$t"; mkdir -p "$out/findings/$t"
  echo "fuzz: $t for ${secs}s" >&2
  # -t: a hang is an input that runs past 5 s (a chat template or regex that never ends); -m none: .NET reserves much address space
  dict=(); [ -f "$here/dict/$t.dict" ] && dict=(-x "$here/dict/$t.dict")
  afl-fuzz -i "$here/corpus/$t" -o "$out/findings/$t" "${dict[@]}" -t 5000 -m none -V "$secs" -- dotnet "$bin/LlmArch.Fuzz.dll" "$t" \
    > "$out/findings/$t/afl.log" 2>&1 || true
  stats="$out/findings/$t/default/fuzzer_stats"
  get() { grep -E "^$1 " "$stats" 2>/dev/null | awk '{print $3}' || echo "?"; }
  execs=$(get execs_done); crashes=$(get saved_crashes); hangs=$(get saved_hangs); secs_run=$(get run_time)
  [ -z "$crashes" ] && crashes=$(get unique_crashes); [ -z "$hangs" ] && hangs=$(get unique_hangs)
  line="$t: ${execs:-?} executions in ${secs_run:-?}s, ${crashes:-?} crashes, ${hangs:-?} hangs"
  summary+=("$line"); echo "fuzz: $line" >&2
  for kind in crashes hangs; do
    d="$out/findings/$t/default/$kind"
    if [ -d "$d" ] && [ -n "$(ls -A "$d" | grep -v README || true)" ]; then
      status=1
      echo "fuzz: replaying $t $kind (uninstrumented):" >&2
      find "$d" -type f ! -name README.txt -print0 | xargs -0 -r timeout 120 dotnet "$plain/LlmArch.Fuzz.dll" "$t" --replay >&2 || true
    fi
  done
done
printf '%s\n' "${summary[@]}"
exit $status
