#!/usr/bin/env bash
# Builds the CUDA targets here and bundles what the GPU machine needs into .bundle/ (git-ignored;
# BUNDLE=.bundle-NAME picks another folder, so that several bundles can be prepared side by side):
# bin/ every *_gpu_test binary, the bench_* binaries, gemm_xcheck, fp8rl, fp8rl_model_probe and
# fp8rl_ckpt_probe (plus EXTRA_TARGETS), stripped; lib/ every
# shared library they load that the GPU machine lacks (Abseil, gRPC, protobuf, spdlog, fmt, ...:
# everything except glibc, libstdc++/libgcc and the CUDA libraries, which it has); tests/ the
# Python scripts. bin/ and lib/ travel as one xz tarball (payload.tar.xz: statically linked test
# binaries share most of their bytes, so it packs them ~4x); tests/gpu/run.sh unpacks it there:
# run(carry=[".bundle"], "bash tests/gpu/run.sh").
#
# usage: scripts/gpu_bundle.sh [BUILD_DIR]   (default build; configured with FP8RL_CUDA=ON)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
out=${BUNDLE:-.bundle}
[[ "$out" == .bundle* ]] || { echo "gpu_bundle: BUNDLE must be .bundle or .bundle-NAME" >&2; exit 1; }
max_mib=60  # the carry limit is 64 MiB

if [ ! -f "$build/build.ninja" ]; then
  cmake -S . -B "$build" -G Ninja -DFP8RL_CUDA=ON
fi
grep -q 'FP8RL_CUDA:BOOL=ON' "$build/CMakeCache.txt" || {
  echo "gpu_bundle: $build is not configured with -DFP8RL_CUDA=ON" >&2
  exit 1
}

mapfile -t gpu_targets < <(ninja -C "$build" -t targets all | sed -n 's/^\([A-Za-z0-9_]*\): phony$/\1/p' \
  | grep -E '_gpu_test$|^bench_' | grep -v '^cmake_' | sort -u)
targets=("${gpu_targets[@]}" gemm_xcheck fp8rl fp8rl_model_probe fp8rl_ckpt_probe ${EXTRA_TARGETS:-})
cmake --build "$build" --target "${targets[@]}"

rm -rf "$out"
mkdir -p "$out/bin" "$out/lib" "$out/tests"
bins=()
for t in "${targets[@]}"; do
  f=$(find "$build/tests" "$build/bin" "$build/bench" -maxdepth 2 -type f -executable -name "$t" 2>/dev/null | head -1)
  [ -n "$f" ] || { echo "gpu_bundle: built target $t not found" >&2; exit 1; }
  cp "$f" "$out/bin/"
  bins+=("$out/bin/$t")
done

# Libraries the GPU machine has (Ubuntu 24.04 + CUDA 13 + NCCL): never bundled.
system_lib='^(linux-vdso|ld-linux|libc\.so|libm\.so|libpthread|libdl\.so|librt\.so|libstdc\+\+|libgcc_s|libcuda\.so|libcudart|libcublas|libcublasLt|libnccl|libnvrtc|libnvJitLink)'
declare -A seen=()
for b in "${bins[@]}"; do
  while read -r name _ path _; do
    [ -n "${path:-}" ] && [ -f "$path" ] || continue
    if [[ "$name" =~ $system_lib ]]; then continue; fi
    if [ -z "${seen[$name]:-}" ]; then
      seen[$name]=1
      cp -L "$path" "$out/lib/$name"
    fi
  done < <(ldd "$b" | grep '=>')
done
strip --strip-unneeded "$out"/bin/* "$out"/lib/* 2>/dev/null || true
cp tests/gpu/*.py tests/interop/conftest.py tests/interop/test_hf_parity.py "$out/tests/"

{
  echo "built $(date -u +%FT%TZ) from $(git rev-parse --short HEAD 2>/dev/null || echo '?') (+ working tree)"
  echo "nvcc: $(nvcc --version | tail -1)"
  echo "bin: $(cd "$out/bin" && echo *)"
  echo "lib: $(cd "$out/lib" && echo *)"
} > "$out/MANIFEST"

tar -C "$out" -cf - bin lib | xz -T0 -6 > "$out/payload.tar.xz"
rm -rf "$out/bin" "$out/lib"
size_kib=$(du -sk "$out" | cut -f1)
echo "gpu_bundle: $out is $((size_kib / 1024)) MiB (${#seen[@]} libraries, ${#bins[@]} binaries)"
if [ "$size_kib" -gt $((max_mib * 1024)) ]; then
  echo "gpu_bundle: $out exceeds $max_mib MiB" >&2
  exit 1
fi
