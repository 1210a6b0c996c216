#!/usr/bin/env python3
"""`fp8rl rollout --device cuda` checked against `fp8rl rollout --device cpu` (run by tests/gpu/run.sh).

Two tiny random Qwen3 checkpoints (fp8rl tiny-model, seeds 1 and 2, init std 0.05 as
model_decoder_test's models). The CUDA server generates
greedily (single, n=2 batch and a streamed request) with return_logprob; the CPU server, running
the same weights with BF16 linears, scores prompt + output (max_new_tokens 0, logprob_start_len 0):
every output log-prob of the CUDA server must be within 3e-2 of the CPU decoder's log-prob of the
same token (the CUDA-vs-CPU bound of tests/gpu/model_decoder_test.cc), and each greedy token within
3e-2 of the CPU's best logit (top-1 log-prob). Then /update_weights_from_disk swaps the second
checkpoint into the CUDA server and the comparison is repeated against a CPU server on it.
Standard library only (the GPU machine has no `requests`).
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

TOL = 3e-2


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port, path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.read().decode()


def start(fp8rl, model, device, log):
    port = free_port()
    p = subprocess.Popen([fp8rl, "rollout", "--model-path", model, "--port", str(port), "--device",
                          device, "--dtype", "bfloat16", "--skip-tokenizer-init",
                          "--max-total-tokens", "8192"], stdout=log, stderr=log)
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
            return p, port
        except Exception:
            if p.poll() is not None:
                sys.exit(f"{device} server exited with {p.returncode}")
            time.sleep(0.1)
    sys.exit(f"{device} server did not become healthy")


def generate(port, prompts, n=1):
    body = {"input_ids": prompts, "return_logprob": True,
            "sampling_params": {"temperature": 0, "max_new_tokens": 24, "ignore_eos": True, "n": n}}
    return json.loads(post(port, "/generate", body))


def streamed(port, prompt):
    body = {"input_ids": prompt, "return_logprob": True, "stream": True,
            "sampling_params": {"temperature": 0, "max_new_tokens": 16, "ignore_eos": True}}
    last = None
    for line in post(port, "/generate", body).splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            last = json.loads(line[6:])
    return last


def check(cuda_port, cpu_port, label):
    prompts = [[(7 * i + 3 * j) % 1000 + 3 for j in range(n)] for i, n in enumerate([1, 9, 40, 70])]
    outs = generate(cuda_port, prompts) + generate(cuda_port, prompts[2], n=2)
    outs.append(streamed(cuda_port, prompts[1]))
    sources = prompts + [prompts[2]] * 2 + [prompts[1]]
    worst_lp = worst_gap = 0.0
    for prompt, out in zip(sources, outs):
        lps = out["meta_info"]["output_token_logprobs"]
        ids = [t[1] for t in lps]
        ref = json.loads(post(cpu_port, "/generate", {
            "input_ids": prompt + ids, "return_logprob": True, "logprob_start_len": 0,
            "top_logprobs_num": 1, "sampling_params": {"max_new_tokens": 0}}))
        # The last len(ids) positions are the output tokens (SGLang's entry for the start
        # position is a null, hence counting from the end).
        ref_lp = ref["meta_info"]["input_token_logprobs"][-len(ids):]
        ref_top = ref["meta_info"]["input_top_logprobs"][-len(ids):]
        assert len(ref_lp) == len(ids), (len(ref_lp), len(ids))
        for (lp, tid, _), (rlp, rid, _), top in zip(lps, ref_lp, ref_top):
            assert rid == tid
            worst_lp = max(worst_lp, abs(lp - rlp))
            worst_gap = max(worst_gap, top[0][0] - rlp)
    print(f"[{label}] {sum(len(o['meta_info']['output_token_logprobs']) for o in outs)} tokens: "
          f"worst |logprob cuda - cpu| {worst_lp:.3e}, worst greedy gap {worst_gap:.3e}", flush=True)
    return worst_lp <= TOL and worst_gap <= TOL, {"worst_logprob": worst_lp, "worst_gap": worst_gap}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fp8rl", required=True)
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="fp8rl_rollout_cuda_")
    models = []
    for seed in (1, 2):
        d = os.path.join(work, f"m{seed}")
        subprocess.run([a.fp8rl, "tiny-model", "--save-dir", d, "--seed", str(seed), "--init-std",
                        "0.05", "--hidden-size", "128", "--intermediate-size", "256",
                        "--head-dim", "32"], check=True, stdout=subprocess.DEVNULL)
        models.append(d)
    log = open(os.path.join(work, "servers.log"), "w")
    procs = []
    try:
        cuda, cuda_port = start(a.fp8rl, models[0], "cuda", log)
        cpu, cpu_port = start(a.fp8rl, models[0], "cpu", log)
        procs += [cuda, cpu]
        ok1, r1 = check(cuda_port, cpu_port, "weights 1")
        print(post(cuda_port, "/update_weights_from_disk", {"model_path": models[1]}), flush=True)
        cpu2, cpu2_port = start(a.fp8rl, models[1], "cpu", log)
        procs.append(cpu2)
        ok2, r2 = check(cuda_port, cpu2_port, "after /update_weights_from_disk")
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=60)
        log.close()
    json.dump({"before_update": r1, "after_update": r2, "tolerance": TOL}, open(a.json, "w"))
    if not (ok1 and ok2):
        print(open(os.path.join(work, "servers.log")).read()[-3000:])
        sys.exit(1)


if __name__ == "__main__":
    main()
