#!/usr/bin/env python3
"""HF transformers generate() decode speed on random Qwen3 models of fp8rl's benchmark shapes.

The baseline of bench_decode (run both in one GPU session): for Qwen3-0.6B and Qwen3-1.7B shapes in
BF16 on the GPU, B random prompts of --prompt tokens, greedy, exactly --new tokens each. Decode
tokens/s = B * (new - 1) / (time of generate(new) - time of generate(1)): the prefill and first token
cancel out, as bench_decode counts every step after the first. Median of --repeats runs after a
warm-up. Writes {"results": [{"model", "batch", "decode_tokens_per_s", ...}]}.
"""
import argparse
import json
import statistics
import time

import torch
import transformers

SHAPES = {"qwen3-0.6b": (1024, 3072), "qwen3-1.7b": (2048, 6144)}


def config(hidden, inter):
    return transformers.Qwen3Config(
        vocab_size=151936, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=28,
        num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
        rope_theta=1e6, tie_word_embeddings=True, rms_norm_eps=1e-6)


def timed_generate(model, ids, new):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                         min_new_tokens=new, do_sample=False, pad_token_id=0)
    torch.cuda.synchronize()
    assert out.shape[1] == ids.shape[1] + new, out.shape
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", required=True)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--batch", default="1,64")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.manual_seed(0)
    results = []
    for name, (hidden, inter) in SHAPES.items():
        with torch.device("cuda"):
            model = transformers.Qwen3ForCausalLM(config(hidden, inter)).to(torch.bfloat16).eval()
        for batch in [int(b) for b in a.batch.split(",")]:
            ids = torch.randint(0, 151936, (batch, a.prompt), device="cuda")
            with torch.inference_mode():
                timed_generate(model, ids, a.new)  # warm-up
                full = statistics.median(timed_generate(model, ids, a.new) for _ in range(a.repeats))
                first = statistics.median(timed_generate(model, ids, 1) for _ in range(a.repeats))
            rate = batch * (a.new - 1) / (full - first)
            results.append({"model": name, "batch": batch, "prompt": a.prompt, "new": a.new,
                            "generate_s": full, "first_token_s": first,
                            "decode_tokens_per_s": rate})
            print(f"HF generate {name} batch {batch}: {rate:.0f} decode tok/s "
                  f"(generate {full:.2f} s, first token {first * 1e3:.0f} ms)", flush=True)
        del model
        torch.cuda.empty_cache()
    json.dump({"transformers": transformers.__version__, "torch": torch.__version__,
               "device": torch.cuda.get_device_name(), "results": results},
              open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
