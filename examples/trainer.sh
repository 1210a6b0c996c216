#!/bin/bash
# Starts `fp8rl trainer` the way slime's low-precision scripts start Megatron: flag groups in
# arrays, Megatron/slime flag names. Without MODEL it trains a tiny random Qwen3 model it writes
# first, so the script runs anywhere:
#   examples/trainer.sh                          # FP8 blockwise training with FP8 parameters
#   MODE=bf16 examples/trainer.sh                # BF16 linears
#   MODE=int4 examples/trainer.sh                # INT4 QAT (W4 fake-quant, straight-through)
#   DEVICE=cuda examples/trainer.sh              # on the GPU, AdamW on the GPU too
#   DEVICE=cuda OFFLOAD=1 examples/trainer.sh    # on the GPU, AdamW state in host memory
#   MODEL=/root/Qwen3-4B SAVE=/root/ckpt examples/trainer.sh
# Probes: curl localhost:$HTTP_PORT/readyz, /metrics; gRPC fp8rl.v1.Trainer on $PORT.
set -euo pipefail

FP8RL=${FP8RL:-$(dirname "$0")/../build/bin/fp8rl}
MODE=${MODE:-fp8}
WORK=${WORK:-/tmp/fp8rl-trainer}
SAVE=${SAVE:-$WORK/ckpt}
PORT=${PORT:-50051}
HTTP_PORT=${HTTP_PORT:-8080}

if [ -z "${MODEL:-}" ]; then
  MODEL=$WORK/tiny-qwen3
  [ -d "$MODEL" ] || "$FP8RL" tiny-model --save-dir "$MODEL" --hidden-size 256 --num-layers 2 \
    --vocab-size 1024
fi

CKPT_ARGS=(
  --model-path "$MODEL"
  --ref-load "$MODEL"
  --save "$SAVE"
  --load "$SAVE"
  --save-interval 20
)

case "$MODE" in
  fp8) PRECISE_ARGS=(--bf16 --fp8-format e4m3 --fp8-recipe blockwise --fp8-param-gather) ;;
  bf16) PRECISE_ARGS=(--bf16) ;;
  int4)
    PRECISE_ARGS=(--bf16)
    export OPEN_TRAINING_INT4_FAKE_QAT_FLAG=1
    export OPEN_TRAINING_INT4_GROUP_SIZE=${OPEN_TRAINING_INT4_GROUP_SIZE:-128}
    ;;
  *) echo "MODE must be fp8, bf16 or int4" >&2; exit 2 ;;
esac
# slime sets this for every train actor: TransformerEngine's blockwise recipe with FP32 scales.
export NVTE_FP8_BLOCK_SCALING_FP32_SCALES=${NVTE_FP8_BLOCK_SCALING_FP32_SCALES:-1}

DEVICE_ARGS=(--device "${DEVICE:-cpu}")
[ "${OFFLOAD:-0}" = 1 ] && DEVICE_ARGS+=(--optimizer-cpu-offload)

OPTIMIZER_ARGS=(
  --optimizer adam
  --lr 1e-6
  --lr-decay-style constant
  --weight-decay 0.1
  --adam-beta1 0.9
  --adam-beta2 0.98
  --clip-grad 1.0
)

GRPO_ARGS=(
  --use-kl-loss
  --kl-loss-coef 0.00
  --kl-loss-type low_var_kl
  --entropy-coef 0.00
  --eps-clip 0.2
  --eps-clip-high 0.28
  --use-tis
)

SERVE_ARGS=(
  --host "${HOST:-0.0.0.0}"
  --port "$PORT"
  --http-port "$HTTP_PORT"
  --micro-batch-size 4
  --update-weight-disk-dir "$WORK/weights"
)

exec "$FP8RL" trainer "${CKPT_ARGS[@]}" "${PRECISE_ARGS[@]}" "${DEVICE_ARGS[@]}" \
  "${OPTIMIZER_ARGS[@]}" "${GRPO_ARGS[@]}" "${SERVE_ARGS[@]}" "$@"
