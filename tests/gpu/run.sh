#!/usr/bin/env bash
# The one script run on the GPU machine, from the repo root, with the bundle built here by
# scripts/gpu_bundle.sh carried along:  run(carry=[".bundle"], command="bash tests/gpu/run.sh").
# Runs every GPU test binary, compute-sanitizer memcheck on them (the exhaustive 2^32 sweeps
# excluded), the torch._scaled_mm cross-check, the HF parity test (CPU and CUDA decoders), the
# torch_dist checkpoint check and the benchmarks (bench_fp8, bench_attention, bench_model, and
# bench_decode against bench/hf_generate.py); logs and
# JSON go to $OUT; a short table comes last.
#   RUN_TESTS=0 RUN_SANITIZER=0 RUN_XCHECK=0 RUN_PARITY=0 RUN_DCP=0 RUN_BENCH=0 RUN_ROLLOUT=0 RUN_DECODE=0 skip parts; BENCH_ARGS (bench_fp8, default "all"),
#   MODEL_BENCH_ARGS (bench_model, default "all");
#   RUN_NCU=1 profiles one launch (NCU_KERNEL regex, NCU_ONLY bench row) into ncu.log;
#   RUN_PROFILE=1 times every kernel of one Qwen3-1.7B training step (PROFILE_LAYERS layers, BF16
#   and FP8) under ncu and sums them by kernel (profile.log).
set -uo pipefail
cd "$(dirname "$0")/../.."
B=${BUNDLE:-.bundle}  # run(carry=[".bundle-NAME"], "BUNDLE=.bundle-NAME bash tests/gpu/run.sh") for another
OUT=${OUT:-/tmp/fp8rl_gpu_out}
mkdir -p "$OUT"
# scripts/gpu_bundle.sh packs bin/ and lib/ into payload.tar.xz.
[ -d "$B/bin" ] || xz -dc "$B/payload.tar.xz" | tar -C "$B" -xf - || { echo "no bundle in $B" >&2; exit 1; }
export LD_LIBRARY_PATH="$PWD/$B/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export PYTHONUNBUFFERED=1
SAN=/usr/local/cuda/bin/compute-sanitizer
[ -x "$SAN" ] || SAN=$(command -v compute-sanitizer || echo "")

declare -a names=() results=() secs=()
step() {  # step NAME LOG CMD...: runs CMD, appends its output to LOG, records PASS/FAIL
  local name=$1 log=$2
  shift 2
  local t0=$SECONDS
  echo "=== $name: $*" | tee -a "$log"
  "$@" >>"$log" 2>&1
  local rc=$?
  tail -n 4 "$log"
  names+=("$name")
  secs+=($((SECONDS - t0)))
  if [ $rc -eq 0 ]; then results+=(PASS); elif [ $rc -eq 77 ]; then results+=(SKIP); else results+=("FAIL rc=$rc"); fi
}

{
  echo "host: $(hostname) $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  echo "bundle: $(head -1 $B/MANIFEST 2>/dev/null)"
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1
  ls /usr/local/cuda/lib64/libcublasLt.so.* 2>/dev/null | head -3
} | tee "$OUT/summary.txt"

if [ "${RUN_TESTS:-1}" = 1 ]; then
  for t in $B/bin/*_gpu_test; do
    step "test $(basename "$t")" "$OUT/tests.log" timeout 300 "$t" --durations yes
  done
fi
if [ "${RUN_SANITIZER:-1}" = 1 ]; then
  if [ -n "$SAN" ]; then
    for t in $B/bin/*_gpu_test; do
      step "memcheck $(basename "$t")" "$OUT/sanitizer.log" timeout 300 "$SAN" --tool memcheck \
        --error-exitcode 1 --print-limit 20 "$t" '~[exhaustive]'
    done
  else
    names+=("memcheck"); results+=("FAIL: compute-sanitizer not found"); secs+=(0)
  fi
fi
if [ "${RUN_XCHECK:-1}" = 1 ]; then
  rm -rf /tmp/fp8rl_xcheck && mkdir -p /tmp/fp8rl_xcheck
  step "gemm_xcheck (ours)" "$OUT/xcheck.log" $B/bin/gemm_xcheck /tmp/fp8rl_xcheck
  step "torch._scaled_mm cross-check" "$OUT/xcheck.log" python3 tests/gpu/torch_xcheck.py \
    /tmp/fp8rl_xcheck --json "$OUT/torch_xcheck.json"
fi
if [ "${RUN_PARITY:-1}" = 1 ]; then  # fp8rl's CPU decoder vs transformers (logits + gradients)
  step "HF transformers parity (CPU decoder)" "$OUT/parity.log" env \
    FP8RL_MODEL_PROBE="$PWD/$B/bin/fp8rl_model_probe" python3 -m pytest -q -p no:cacheprovider \
    $B/tests/test_hf_parity.py
fi
if [ "${RUN_DCP:-1}" = 1 ]; then  # torch.distributed.checkpoint reads fp8rl's torch_dist checkpoints, and back
  rm -rf /tmp/fp8rl_dcp
  step "torch_dist checkpoints (dcp_check)" "$OUT/dcp.log" python3 tests/gpu/dcp_check.py \
    --probe $B/bin/fp8rl_ckpt_probe --work /tmp/fp8rl_dcp --json "$OUT/dcp_check.json"
fi
if [ "${RUN_NCU:-0}" = 1 ]; then  # one launch of one tile kernel under Nsight Compute
  NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  step "ncu ${NCU_ONLY:-row+col}" "$OUT/ncu.log" timeout 240 "$NCU" --kernel-name-base demangled \
    -k "regex:${NCU_KERNEL:-LoadBF16, \(int\)3>}" --launch-count 1 \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    --section MemoryWorkloadAnalysis $B/bin/bench_fp8 quant --only "${NCU_ONLY:-row+col}" \
    --iters 2 --warmup 0 --json /tmp/ncu_bench.json
fi
if [ "${RUN_PROFILE:-0}" = 1 ]; then  # one training step's kernels, summed by kernel
  NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  for p in bf16 fp8; do
    step "ncu step $p" "$OUT/ncu_step_$p.log" timeout 300 "$NCU" --csv --profile-from-start off \
      --clock-control none --metrics gpu__time_duration.sum --kernel-name-base function \
      $B/bin/bench_model profile --only 1.7b --layers "${PROFILE_LAYERS:-4}" --precision $p
  done
  python3 tests/gpu/ncu_kernel_times.py "$OUT/ncu_step_bf16.log" "$OUT/ncu_step_fp8.log" \
    --json "$OUT/profile.json" | tee "$OUT/profile.log"
fi
if [ "${RUN_BENCH:-1}" = 1 ]; then
  step "bench_fp8 ${BENCH_ARGS:-all}" "$OUT/bench.log" timeout 360 $B/bin/bench_fp8 ${BENCH_ARGS:-all} \
    --json "$OUT/bench_fp8.json"
  step "bench_attention" "$OUT/bench.log" timeout 240 $B/bin/bench_attention --json "$OUT/bench_attention.json"
  step "bench_model ${MODEL_BENCH_ARGS:-all}" "$OUT/bench.log" timeout 420 $B/bin/bench_model \
    ${MODEL_BENCH_ARGS:-all} --json "$OUT/bench_model.json"
fi
if [ "${RUN_ROLLOUT:-1}" = 1 ]; then  # fp8rl rollout --device cuda against --device cpu
  step "rollout --device cuda vs cpu" "$OUT/rollout.log" timeout 300 python3 \
    tests/gpu/rollout_cuda_check.py --fp8rl $B/bin/fp8rl --json "$OUT/rollout_cuda.json"
fi
if [ "${RUN_DECODE:-1}" = 1 ]; then  # generation: HF generate() first (the baseline), then ours
  step "HF generate (decode baseline)" "$OUT/decode.log" timeout 300 python3 bench/hf_generate.py \
    --json "$OUT/hf_generate.json"
  step "bench_decode" "$OUT/decode.log" timeout 300 $B/bin/bench_decode \
    --hf-json "$OUT/hf_generate.json" --json "$OUT/bench_decode.json"
fi

{
  echo
  echo "== fp8rl GPU run =="
  for i in "${!names[@]}"; do printf '%-46s %-14s %5ss\n' "${names[$i]}" "${results[$i]}" "${secs[$i]}"; done
  for j in "$OUT"/bench_fp8.json "$OUT"/bench_attention.json "$OUT"/bench_model.json "$OUT"/bench_decode.json; do
    [ -f "$j" ] || continue
    python3 - "$j" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
print(f"-- {sys.argv[1].rsplit('/', 1)[-1]} ({j.get('device', '?')}) --")
for r in j["rows"]:
    if r["target"] > 0 or "baseline" in r["name"] or r.get("group") in ("attention", "throughput", "converge", "decode"):
        flag = "" if r["target"] <= 0 else ("PASS" if r["meets_target"] else "MISS")
        print(f"{r['name'][:40]:40s} {r['shape'][:20]:20s} {r['rate']:9.1f} {r['unit']:8s} x{r['ratio']:.3f} {flag}")
EOF
  done
  if [ -f "$OUT/torch_xcheck.json" ]; then
    python3 - "$OUT/torch_xcheck.json" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
for c in j["cases"]:
    if "ours_vs_torch" in c:
        v = "agree" if c["agree"] else ("TORCH WRONG" if c["torch_wrong"] else "DIFFER")
        print(f"xcheck {c['name']:20s} ours~torch {c['ours_vs_torch']:.1e} bitwise {c['bitwise_equal_share']*100:5.1f}% "
              f"ours~fp64 {c['ours_vs_fp64']:.1e} torch~fp64 {c['torch_vs_fp64']:.1e} {v} [{c['layout']}]")
    else:
        print(f"xcheck {c['name']:20s} torch refused: {c.get('torch_error', '')[:60]}")
EOF
  fi
} | tee -a "$OUT/summary.txt"
for r in "${results[@]}"; do [[ "$r" == PASS || "$r" == SKIP ]] || exit 1; done
exit 0
