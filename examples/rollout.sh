#!/bin/bash
# Starts `fp8rl rollout` the way slime starts its SGLang engines: flag groups in arrays, SGLang's
# launch_server flag names. Without MODEL it serves a tiny random Qwen3 model it writes first, so
# the script runs anywhere:
#   examples/rollout.sh                          # BF16 checkpoint, float32 linears
#   MODE=fp8 examples/rollout.sh                 # the same model converted to blockwise FP8
#   MODEL=/root/Qwen3-4B-FP8 examples/rollout.sh
# Then:
#   curl localhost:$PORT/health_generate
#   curl localhost:$PORT/generate -d '{"input_ids":[1,2,3],"sampling_params":{"max_new_tokens":8},"return_logprob":true}'
#   curl localhost:$PORT/metrics
set -euo pipefail

FP8RL=${FP8RL:-$(dirname "$0")/../build/bin/fp8rl}
MODE=${MODE:-bf16}
WORK=${WORK:-/tmp/fp8rl-rollout}
PORT=${PORT:-30000}

if [ -z "${MODEL:-}" ]; then
  MODEL=$WORK/tiny-qwen3
  [ -d "$MODEL" ] || "$FP8RL" tiny-model --save-dir "$MODEL" --hidden-size 256 --num-layers 2 \
    --vocab-size 1024
  if [ "$MODE" = fp8 ]; then
    [ -d "$MODEL-fp8" ] || "$FP8RL" convert --model-dir "$MODEL" --save-dir "$MODEL-fp8" --format fp8
    MODEL=$MODEL-fp8
  fi
fi

MODEL_ARGS=(
  --model-path "$MODEL"
  --context-length "${CONTEXT_LENGTH:-0}"
)

SCHED_ARGS=(
  --max-running-requests "${MAX_RUNNING_REQUESTS:-64}"
  --max-total-tokens "${MAX_TOTAL_TOKENS:-0}"
  --random-seed "${SEED:-1234}"
)

SERVE_ARGS=(
  --host "${HOST:-0.0.0.0}"
  --port "$PORT"
  --enable-metrics
  --served-model-name "$(basename "$MODEL")"
)
[ -n "${API_KEY:-}" ] && SERVE_ARGS+=(--api-key "$API_KEY")

exec "$FP8RL" rollout "${MODEL_ARGS[@]}" "${SCHED_ARGS[@]}" "${SERVE_ARGS[@]}" "$@"
