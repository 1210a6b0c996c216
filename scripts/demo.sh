#!/usr/bin/env bash
# The demo until the RL loop lands: make a random Qwen3 checkpoint, convert it to blockwise FP8 and
# to INT4 pack-quantized, and show what was written and how far each weight moved.
set -euo pipefail
bin=${1:-build/bin/fp8rl}
work=${FP8RL_DEMO_DIR:-build/demo}
rm -rf "$work"
mkdir -p "$work"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "A random Qwen3 checkpoint (BF16, 2 shards)"
"$bin" tiny-model --save-dir "$work/qwen3-bf16" --hidden-size 512 --intermediate-size 1536 \
  --num-layers 4 --num-attention-heads 8 --num-key-value-heads 4 --head-dim 64 --vocab-size 4096 \
  --max-shard-bytes 16000000 --seed 1
ls -l "$work/qwen3-bf16"

step "fp8rl convert --format fp8 (DeepSeek-V3 layout, power-of-2 scales)"
"$bin" convert --model-dir "$work/qwen3-bf16" --save-dir "$work/qwen3-fp8" --format fp8
python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["quantization_config"], indent=1))' \
  "$work/qwen3-fp8/config.json"

step "fp8rl convert --format int4 --group-size 128 (compressed-tensors pack-quantized)"
"$bin" convert --model-dir "$work/qwen3-bf16" --save-dir "$work/qwen3-int4" --format int4 --group-size 128

step "Round-trip error of every quantized weight, FP8"
"$bin" inspect --model-dir "$work/qwen3-fp8" --against "$work/qwen3-bf16" | tail -n 6
step "Round-trip error of every quantized weight, INT4"
"$bin" inspect --model-dir "$work/qwen3-int4" --against "$work/qwen3-bf16" | tail -n 6

step "Sizes"
du -sh "$work"/qwen3-*
