#!/usr/bin/env bash
# Builds cuda/llmarch.fatbin (SASS for sm_90 + PTX for compute_80, which the driver compiles once for any other GPU
# from sm_80 on and caches; SASS for every architecture would not fit the repository size budget) from cuda/src,
# and writes cuda/manifest.txt (the sha256 of every source file and of the fatbin) and cuda/layout.txt (sizes and field
# offsets of the argument structs, as the host compiler lays them out). Runs with any nvcc >= 11.8, e.g. Debian's
# nvidia-cuda-toolkit or the GPU machine's nvcc 13. The test CudaKernelManifestTests checks that the committed
# fatbin and manifest match the committed sources, so they never drift: run this after editing any kernel.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
NVCC="${NVCC:-nvcc}"
CCBIN=()
# Debian's nvcc 11.8 rejects the distribution's newer g++; clang-14 works.
if ! "$NVCC" --version >/dev/null 2>&1; then echo "nvcc not found" >&2; exit 2; fi
if [ -z "${NVCC_CCBIN:-}" ] && command -v clang-14 >/dev/null 2>&1 && "$NVCC" --version | grep -q "release 11"; then CCBIN=(-ccbin clang-14); fi
if [ -n "${NVCC_CCBIN:-}" ]; then CCBIN=(-ccbin "$NVCC_CCBIN"); fi
ARCHS=(-gencode arch=compute_90,code=sm_90 -gencode arch=compute_80,code=compute_80)
# -compress-all: the driver decompresses at load; the committed binary is about a fifth of the plain one.
"$NVCC" "${CCBIN[@]}" -O3 -std=c++17 "${ARCHS[@]}" -Xfatbin -compress-all -fatbin -o llmarch.fatbin src/all.cu
# Struct layouts as the compiler sees them (a host-only program; no GPU needed to run it).
"$NVCC" "${CCBIN[@]}" -std=c++17 -x cu -o /tmp/llmarch_layout src/layout.cpp
/tmp/llmarch_layout > layout.txt
rm -f /tmp/llmarch_layout
{
  echo "# sha256 of the kernel sources and of the fatbin built from them (cuda/build.sh); checked by CudaKernelManifestTests"
  for f in $(cd src && ls | LC_ALL=C sort); do echo "src/$f $(sha256sum "src/$f" | cut -d' ' -f1)"; done
  echo "llmarch.fatbin $(sha256sum llmarch.fatbin | cut -d' ' -f1)"
  echo "layout.txt $(sha256sum layout.txt | cut -d' ' -f1)"
} > manifest.txt
echo "built $(stat -c %s llmarch.fatbin) bytes with $("$NVCC" --version | tail -1)"
