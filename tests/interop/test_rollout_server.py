"""`fp8rl rollout` as SGLang's clients see it, with Python `requests` against the real process:
slime's exact /generate payloads parsed the way slime parses them, batches and n > 1, streaming
(cumulative and incremental SSE), every endpoint, --api-key, each bad input of issue 6 (SGLang's
error body and status, and the server answers afterwards), greedy output against the argmax of
the model's full forward and log-probs against the trainer's (fp8rl_model_probe: the same
Decoder::forward the trainer runs; bitwise) in float32, BF16 and FP8, the sglang router's health
poller through a SIGTERM drain, weight updates from disk (a good folder, wrong shapes, a missing
folder), and a 64-client soak with a disconnecting streamer and flat RSS. The models are tiny
random Qwen3s (`fp8rl tiny-model`) with a byte-level BPE tokenizer trained here with HF
`tokenizers`."""
import json
import random
import shutil
import signal
import subprocess
import threading
import time

import numpy as np
import pytest
import requests
from safetensors.numpy import load_file, save_file
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from rollout_helpers import (RolloutProcess, RouterHealthPoller, SseStream, env_path, post_json,
                             slime_parse, sse_events)

QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
         r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIAL = ["<|pad|>", "<|bos|>", "<|endoftext|>"]  # ids 0, 1, 2: the tiny model's EOS is 2
CORPUS = [
    "The quick brown fox jumps over the lazy dog. Reinforcement learning from rollouts.",
    "def reward(sample):\n    return 1.0 if sample.correct else 0.0\n",
    "Policy gradient with clipped ratios, group-normalised advantages and KL penalties.",
    "Numbers 12345 and 3.14159; answers in \\boxed{42}.",
] * 4
VOCAB, CONTEXT = 512, 512
TINY = {"hidden-size": 64, "intermediate-size": 128, "num-layers": 2, "num-attention-heads": 4,
        "num-key-value-heads": 2, "head-dim": 16, "vocab-size": VOCAB,
        "max-position-embeddings": CONTEXT, "init-std": 0.1, "dtype": "float32", "seed": 0}
# Slow enough (milliseconds per token) that a request of a few hundred tokens is surely still
# running when the test pauses, aborts, disconnects or sends SIGTERM right after its first chunk.
SLOW = dict(TINY, **{"hidden-size": 128, "intermediate-size": 384, "num-layers": 4,
                     "head-dim": 32})
PROMPT = [1, 37, 101, 255, 42, 7, 300, 12]
LABELS = '{model_name="tiny",engine_type="unified"}'


# ---------------------------------------------------------------------------------------------
# Fixtures: tokenizer, models, servers.

@pytest.fixture(scope="module")
def fp8rl(fp8rl_bin):
    """Runs `fp8rl ARGS...` (a tool subcommand) and checks that it succeeded."""

    def _run(*args):
        p = subprocess.run([fp8rl_bin, *map(str, args)], capture_output=True, text=True,
                           timeout=600)
        assert p.returncode == 0, f"fp8rl {args}:\n{p.stdout}\n{p.stderr}"

    return _run


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    assert tok.token_to_id("<|endoftext|>") == 2
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return tok, path


def make_model(fp8rl, tmp_path_factory, name, tokenizer, shape=TINY, **overrides):
    path = tmp_path_factory.mktemp("models") / name
    flags = dict(shape, **{k.replace("_", "-"): v for k, v in overrides.items()})
    fp8rl("tiny-model", "--save-dir", path, *sum(([f"--{k}", v] for k, v in flags.items()), []))
    shutil.copy(tokenizer[1], path / "tokenizer.json")
    return path


@pytest.fixture(scope="module")
def model(fp8rl, tmp_path_factory, tokenizer):
    return make_model(fp8rl, tmp_path_factory, "tiny", tokenizer)


@pytest.fixture(scope="module")
def slow_model(fp8rl, tmp_path_factory, tokenizer):
    return make_model(fp8rl, tmp_path_factory, "slow", tokenizer, SLOW)


@pytest.fixture(scope="module")
def start(fp8rl_bin, tmp_path_factory):
    """Starts rollout servers; every one still running is SIGTERMed at the end."""
    procs = []

    def _start(model_dir, *flags, ready=True):
        log = tmp_path_factory.mktemp("logs") / "rollout.log"
        p = RolloutProcess(fp8rl_bin, log, model_dir, *flags)
        procs.append(p)
        if ready:
            p.wait_ready()
        return p

    yield _start
    for p in procs:
        if p.proc.poll() is None:
            assert p.terminate() == 0, p.read_log()


@pytest.fixture(scope="module")
def server(start, model):
    # float32 linears: the checkpoint holds float32 weights, but fp8rl writes torch_dtype
    # bfloat16 into every config.json, which --dtype auto (SGLang's default) follows.
    return start(model, "--dtype", "float32", "--enable-metrics", "--served-model-name", "tiny",
                 "--random-seed", 7, "--max-body-bytes", 1000000, "--health-check-timeout", 2)


@pytest.fixture(scope="module")
def slow_server(start, slow_model):
    return start(slow_model, "--enable-metrics", "--served-model-name", "tiny",
                 "--health-check-timeout", 1)


def generate(srv, body, **kw):
    r = post_json(srv.url, "/generate", body, **kw)
    assert r.status_code == 200, r.text
    return r.json()


def probe(tmp_path, model_dir, tokens, precision="f32"):
    """The trainer-side forward over `tokens`: logits [T, V] and log p(tokens[t+1]) [T]."""
    save_file({"tokens": np.array(tokens, dtype=np.int32)}, str(tmp_path / "tokens.safetensors"))
    out = tmp_path / "probe.safetensors"
    p = subprocess.run([env_path("FP8RL_MODEL_PROBE"), str(model_dir),
                        str(tmp_path / "tokens.safetensors"), str(out), "--precision", precision],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    t = load_file(str(out))
    return t["logits"], t["logprobs"]


def greedy(srv, max_new=24, prompt=PROMPT):
    return generate(srv, {"input_ids": prompt, "return_logprob": True,
                          "sampling_params": {"temperature": 0, "max_new_tokens": max_new,
                                              "ignore_eos": True}})


def metric(text, name, labels=LABELS):
    for line in text.splitlines():
        if line.startswith(name + labels + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name}{labels} not in /metrics")


def open_stream(srv, body, **kw):
    r = post_json(srv.url, "/generate", dict(body, stream=True), stream=True, **kw)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/event-stream")
    return SseStream(r)


def last_chunk(stream):
    events = stream.rest()
    assert events[-1] == "[DONE]", events[-2:]
    return json.loads(events[-2])


def wait_until(cond, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def idle(srv):
    load = requests.get(srv.url + "/get_load").json()[0]
    return load["num_reqs"] == 0 and load["num_tokens"] == 0


# ---------------------------------------------------------------------------------------------
# /generate as slime uses it.

def test_slime_payload_and_parsing(server, tokenizer):
    tok = tokenizer[0]
    # slime's sglang_rollout.generate payload, field for field (reference/slime.md §5.1).
    payload = {"sampling_params": {"temperature": 0.8, "top_p": 1.0, "top_k": -1,
                                   "max_new_tokens": 20, "stop": ["\\boxed{"],
                                   "stop_token_ids": [2], "skip_special_tokens": False,
                                   "no_stop_trim": True, "spaces_between_special_tokens": False,
                                   "custom_params": {"return_top_p_token_ids": True},
                                   "sampling_seed": 1234},
               "return_logprob": True, "input_ids": PROMPT}
    out = generate(server, payload, headers={"X-SMG-Routing-Key": "session-1"})
    s = slime_parse(out)
    assert s["status"] in ("TRUNCATED", "COMPLETED")
    assert s["prompt_tokens"] == len(PROMPT)
    assert s["completion_tokens"] == len(s["tokens"]) == len(s["logprobs"]) > 0
    assert s["tokens"] == out["output_ids"]
    assert s["weight_version"] == "default" and s["cached_tokens"] == 0
    assert all(isinstance(x, float) and x <= 0 for x in s["logprobs"])
    # no_stop_trim: the text is every output token decoded (special ones kept).
    assert s["text"] == tok.decode(s["tokens"], skip_special_tokens=False)
    meta = out["meta_info"]
    assert all(item[2] is None for item in meta["output_token_logprobs"])
    assert meta["input_token_logprobs"] == [[None, PROMPT[-1], None]]
    assert meta["finish_reason"]["type"] != "length" or meta["finish_reason"]["length"] == 20
    assert meta["e2e_latency"] > 0 and len(meta["id"]) == 32
    # The same seed reproduces; sampling_seed absent: the server's --random-seed stream.
    assert generate(server, payload)["output_ids"] == out["output_ids"]
    # A text prompt is tokenized as HF tokenizers does.
    text = "Reinforcement learning from rollouts: the quick brown fox"
    out = generate(server, {"text": text, "sampling_params": {"max_new_tokens": 4}})
    assert out["meta_info"]["prompt_tokens"] == len(tok.encode(text).ids)
    assert "output_token_logprobs" not in out["meta_info"]


def test_finish_reasons_stop_strings_and_eos(server, tokenizer):
    tok = tokenizer[0]
    # Force the first token with logit_bias: EOS (id 2) stops with matched=2 ...
    out = generate(server, {"input_ids": PROMPT, "sampling_params": {
        "max_new_tokens": 8, "logit_bias": {"2": 100.0}}})
    assert out["meta_info"]["finish_reason"] == {"type": "stop", "matched": 2}
    assert out["output_ids"] == [2] and out["text"] == ""
    # ... unless ignore_eos, and min_new_tokens holds it back.
    out = generate(server, {"input_ids": PROMPT, "sampling_params": {
        "max_new_tokens": 3, "logit_bias": {"2": 100.0}, "ignore_eos": True}})
    assert out["meta_info"]["finish_reason"] == {"type": "length", "length": 3}
    out = generate(server, {"input_ids": PROMPT, "sampling_params": {
        "max_new_tokens": 6, "min_new_tokens": 2, "logit_bias": {"2": 100.0},
        "temperature": 0}})
    assert out["output_ids"][2] == 2 and 2 not in out["output_ids"][:2]
    # A stop string: the token spelling " the" is forced; the text is cut before it unless
    # no_stop_trim.
    [the] = tok.encode(" the").ids
    body = {"input_ids": PROMPT, "sampling_params": {
        "max_new_tokens": 8, "stop": [" the"], "logit_bias": {str(the): 100.0}}}
    out = generate(server, body)
    assert out["meta_info"]["finish_reason"] == {"type": "stop", "matched": " the"}
    assert out["output_ids"] == [the] and out["text"] == ""
    body["sampling_params"]["no_stop_trim"] = True
    assert generate(server, body)["text"] == " the"
    # max_new_tokens 0: no output, finish length 0.
    out = generate(server, {"input_ids": PROMPT, "sampling_params": {"max_new_tokens": 0}})
    assert out["output_ids"] == [] and out["meta_info"]["finish_reason"] == {
        "type": "length", "length": 0}


def test_batch_n_rids_and_seeds(server):
    body = {"input_ids": [PROMPT, PROMPT[:4]], "rid": "R", "return_logprob": [True, False],
            "sampling_params": {"max_new_tokens": 6, "n": 2, "sampling_seed": 5}}
    out = generate(server, body)
    assert isinstance(out, list) and len(out) == 4
    assert [o["meta_info"]["id"] for o in out] == ["R_0", "R_1", "R_2", "R_3"]
    assert [o["meta_info"]["prompt_tokens"] for o in out] == [8, 8, 4, 4]
    assert "output_token_logprobs" in out[0]["meta_info"]
    assert "output_token_logprobs" not in out[2]["meta_info"]
    # Sample i of n uses seed + i: sample 1 equals a single request with seed 6.
    one = generate(server, {"input_ids": PROMPT,
                            "sampling_params": {"max_new_tokens": 6, "sampling_seed": 6}})
    assert one["output_ids"] == out[1]["output_ids"]
    assert isinstance(one, dict) and one["meta_info"]["id"] != out[1]["meta_info"]["id"]
    # Per-prompt sampling params and rids; n > 1 alone also answers a list.
    out = generate(server, {"input_ids": [PROMPT, PROMPT], "rid": ["a", "b"],
                            "sampling_params": [{"max_new_tokens": 2}, {"max_new_tokens": 5}]})
    assert [len(o["output_ids"]) for o in out] == [2, 5]
    assert [o["meta_info"]["id"] for o in out] == ["a", "b"]
    out = generate(server, {"input_ids": PROMPT, "sampling_params": {"max_new_tokens": 2, "n": 3}})
    assert isinstance(out, list) and len(out) == 3


def test_top_logprobs_text_in_logprobs_and_prompt_logprobs(server, model, tmp_path, tokenizer):
    tok = tokenizer[0]
    out = generate(server, {"input_ids": PROMPT, "return_logprob": True, "logprob_start_len": 0,
                            "top_logprobs_num": 3, "token_ids_logprob": [2, 5],
                            "return_text_in_logprobs": True,
                            "sampling_params": {"temperature": 0, "max_new_tokens": 5,
                                                "ignore_eos": True}})
    meta = out["meta_info"]
    logits, lps = probe(tmp_path, model, PROMPT + out["output_ids"])
    # Prompt: position 0 is null (SGLang), then log p(prompt[i] | prompt[:i]) = the trainer's.
    assert [e[1] for e in meta["input_token_logprobs"]] == PROMPT
    assert meta["input_token_logprobs"][0][0] is None
    assert [np.float32(e[0]) for e in meta["input_token_logprobs"][1:]] == list(lps[:7])
    assert meta["input_top_logprobs"][0] is None and len(meta["input_top_logprobs"]) == 8
    for k, (top, asked) in enumerate(zip(meta["output_top_logprobs"],
                                         meta["output_token_ids_logprobs"])):
        pos = len(PROMPT) - 1 + k
        assert top[0][1] == out["output_ids"][k] == int(np.argmax(logits[pos]))
        assert [e[1] for e in top] == list(np.argsort(-logits[pos], kind="stable")[:3])
        assert [e[1] for e in asked] == [2, 5]
        lse = np.float32(logits[pos][asked[0][1]] - asked[0][0])  # consistent normaliser
        assert abs(lse - (logits[pos][5] - asked[1][0])) < 1e-5
        assert top[0][2] == tok.decode([top[0][1]], skip_special_tokens=False)
    assert meta["output_token_logprobs"][0][2] == tok.decode([out["output_ids"][0]],
                                                             skip_special_tokens=False)


# ---------------------------------------------------------------------------------------------
# Numerics: greedy = argmax of the full forward; log-probs = the trainer's, bitwise.

def check_greedy_against_probe(out, logits, lps):
    ids = out["output_ids"]
    for k, tok_id in enumerate(ids):
        pos = len(PROMPT) - 1 + k
        assert tok_id == int(np.argmax(logits[pos])), f"token {k}"
    got = np.array([e[0] for e in out["meta_info"]["output_token_logprobs"]], dtype=np.float32)
    want = lps[len(PROMPT) - 1:len(PROMPT) - 1 + len(ids)]
    # The KV-cache decode and the trainer's packed forward share every kernel and summation
    # order, and the log-softmax arithmetic (token_stats): equal to the last bit.
    np.testing.assert_array_equal(got, want)


def test_greedy_and_logprobs_equal_the_trainer_f32(server, model, tmp_path):
    out = greedy(server, max_new=32)
    assert len(set(out["output_ids"])) > 3  # not a constant continuation
    logits, lps = probe(tmp_path, model, PROMPT + out["output_ids"])
    check_greedy_against_probe(out, logits, lps)


@pytest.mark.parametrize("fmt", ["bf16", "fp8"])
def test_greedy_and_logprobs_equal_the_trainer_bf16_fp8(fp8rl, start, model, tokenizer,
                                                        tmp_path_factory, tmp_path, fmt):
    # A BF16 checkpoint runs BF16 linears (--dtype auto, the trainer's default); an FP8 blockwise
    # one (fp8rl convert) runs the FP8 recipe.
    if fmt == "bf16":
        path = make_model(fp8rl, tmp_path_factory, "tiny-bf16", tokenizer, dtype="bfloat16")
    else:
        path = tmp_path_factory.mktemp("fp8") / "tiny-fp8"
        fp8rl("convert", "--model-dir", model, "--save-dir", path, "--format", "fp8")
    srv = start(path)
    info = requests.get(srv.url + "/get_server_info").json()
    assert info["quantization"] is None and info["dtype"] == "auto"
    assert f"linears {fmt}" in srv.read_log()
    out = greedy(srv, max_new=24)
    logits, lps = probe(tmp_path, path, PROMPT + out["output_ids"], precision=fmt)
    check_greedy_against_probe(out, logits, lps)
    assert srv.terminate() == 0


# ---------------------------------------------------------------------------------------------
# Streaming.

def test_stream_cumulative_matches_the_answer(server):
    body = {"input_ids": PROMPT, "return_logprob": True,
            "sampling_params": {"max_new_tokens": 12, "sampling_seed": 3, "ignore_eos": True}}
    whole = generate(server, body)
    events = open_stream(server, body).rest()
    assert events[-1] == "[DONE]" and "[DONE]" not in events[:-1]
    chunks = [json.loads(e) for e in events[:-1]]
    assert len(chunks) == 12  # --stream-interval 1: one chunk per token
    for a, b in zip(chunks, chunks[1:]):
        assert b["output_ids"][:len(a["output_ids"])] == a["output_ids"]
        assert b["meta_info"]["output_token_logprobs"][:len(a["output_ids"])] == \
            a["meta_info"]["output_token_logprobs"]
        assert a["meta_info"]["finish_reason"] is None and "e2e_latency" not in a["meta_info"]
        assert a["meta_info"]["completion_tokens"] == len(a["output_ids"])
        assert "index" not in a
    last = chunks[-1]
    for key in ("text", "output_ids"):
        assert last[key] == whole[key]
    for key in ("finish_reason", "output_token_logprobs", "prompt_tokens", "completion_tokens",
                "weight_version"):
        assert last["meta_info"][key] == whole["meta_info"][key]
    assert "e2e_latency" in last["meta_info"]
    # Per-request stream_interval.
    body["sampling_params"]["stream_interval"] = 5
    chunks = [json.loads(e) for e in open_stream(server, body).rest()[:-1]]
    assert [len(c["output_ids"]) for c in chunks] == [1, 6, 11, 12]  # SGLang: count % 5 == 1


def test_stream_batch_carries_index(server):
    events = open_stream(server, {
        "input_ids": [PROMPT, PROMPT[:3]], "sampling_params": {"max_new_tokens": 4, "n": 2}}).rest()
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    finals = {c["index"]: c for c in chunks if c["meta_info"]["finish_reason"] is not None}
    assert sorted(finals) == [0, 1, 2, 3]
    assert all(len(c["output_ids"]) == 4 for c in finals.values())
    assert [finals[i]["meta_info"]["prompt_tokens"] for i in range(4)] == [8, 8, 3, 3]


def test_stream_disconnect_aborts_and_frees_the_kv_cache(slow_server):
    srv = slow_server
    before = requests.get(srv.url + "/metrics").text
    stream = open_stream(srv, {"input_ids": PROMPT, "rid": "gone",
                               "sampling_params": {"max_new_tokens": 400, "ignore_eos": True}})
    assert stream.first()["meta_info"]["id"] == "gone"
    # Hold generation so the request is surely running when the client leaves.
    assert post_json(srv.url, "/pause_generation", {"mode": "in_place"}).status_code == 200
    load = requests.get(srv.url + "/get_load").json()[0]
    stream.close()
    assert post_json(srv.url, "/continue_generation", {}).status_code == 200
    assert load["num_reqs"] == 1 and load["num_tokens"] >= len(PROMPT)
    assert wait_until(lambda: idle(srv))
    after = requests.get(srv.url + "/metrics").text
    assert metric(after, "sglang:num_aborted_requests_total") == \
        metric(before, "sglang:num_aborted_requests_total") + 1
    generated = metric(after, "sglang:generation_tokens_total") - \
        metric(before, "sglang:generation_tokens_total")
    assert 1 <= generated < 400
    assert greedy(srv, max_new=2)["meta_info"]["finish_reason"]["type"] == "length"

# ---------------------------------------------------------------------------------------------
# The other endpoints.

def test_info_endpoints(server, model):
    info = requests.get(server.url + "/get_model_info").json()
    assert info["model_path"] == str(model) and info["is_generation"] is True
    assert info["weight_version"] == "default" and info["model_type"] == "qwen3"
    assert set(info) >= {"tokenizer_path", "preferred_sampling_params", "architectures"}
    assert requests.get(server.url + "/model_info").json() == info
    srv = requests.get(server.url + "/get_server_info").json()
    assert srv["dp_size"] == 1 and srv["context_length"] == CONTEXT
    assert srv["max_total_num_tokens"] == 64 * CONTEXT and srv["max_req_input_len"] == CONTEXT - 1
    assert srv["internal_states"][0]["memory_usage"]["token_capacity"] == 64 * CONTEXT
    assert requests.get(server.url + "/get_weight_version").json() == {"weight_version": "default"}
    load = requests.get(server.url + "/get_load").json()
    assert load == [{"dp_rank": 0, "num_reqs": 0, "num_waiting_reqs": 0, "num_tokens": 0}]
    r = requests.get(server.url + "/flush_cache")
    assert r.status_code == 200 and r.text.startswith("Cache flushed.\n")
    assert requests.post(server.url + "/flush_cache").status_code == 200
    assert requests.get(server.url + "/health").status_code == 200
    assert requests.get(server.url + "/health").text == ""
    assert requests.get(server.url + "/health_generate").status_code == 200
    assert requests.get(server.url + "/ping").status_code == 200
    r = requests.get(server.url + "/no_such_endpoint")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}


def test_metrics_have_sglang_names_and_count(server):
    r = requests.get(server.url + "/metrics")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    before = r.text
    for name, kind in [("sglang:prompt_tokens_total", "counter"),
                       ("sglang:generation_tokens_total", "counter"),
                       ("sglang:num_requests_total", "counter"),
                       ("sglang:time_to_first_token_seconds", "histogram"),
                       ("sglang:inter_token_latency_seconds", "histogram"),
                       ("sglang:e2e_request_latency_seconds", "histogram"),
                       ("sglang:num_running_reqs", "gauge"), ("sglang:num_queue_reqs", "gauge"),
                       ("sglang:num_used_tokens", "gauge"), ("sglang:token_usage", "gauge"),
                       ("sglang:gen_throughput", "gauge")]:
        assert f"# TYPE {name} {kind}\n" in before, name
    sched = '{model_name="tiny",engine_type="unified",tp_rank="0",pp_rank="0"}'
    assert metric(before, "sglang:num_running_reqs", sched) == 0
    assert metric(before, "sglang:max_total_num_tokens", sched) == 64 * CONTEXT
    out = greedy(server, max_new=5)
    after = requests.get(server.url + "/metrics").text
    assert metric(after, "sglang:prompt_tokens_total") - \
        metric(before, "sglang:prompt_tokens_total") == len(PROMPT)
    assert metric(after, "sglang:generation_tokens_total") - \
        metric(before, "sglang:generation_tokens_total") == len(out["output_ids"])
    assert metric(after, "sglang:num_requests_total") - \
        metric(before, "sglang:num_requests_total") == 1
    assert metric(after, "sglang:e2e_request_latency_seconds_count") - \
        metric(before, "sglang:e2e_request_latency_seconds_count") == 1
    assert metric(after, "sglang:time_to_first_token_seconds_count") - \
        metric(before, "sglang:time_to_first_token_seconds_count") == 1
    assert metric(after, "sglang:inter_token_latency_seconds_count") - \
        metric(before, "sglang:inter_token_latency_seconds_count") == 4


def test_api_key_incremental_stream_and_no_tokenizer(start, model):
    srv = start(model, "--api-key", "secret", "--incremental-streaming-output",
                "--skip-tokenizer-init", "--random-seed", 7)
    body = {"input_ids": PROMPT, "return_logprob": True,
            "sampling_params": {"max_new_tokens": 6, "ignore_eos": True, "sampling_seed": 1}}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "secret"}):
        r = post_json(srv.url, "/generate", body, headers=headers)
        assert r.status_code == 401 and r.json() == {"error": "Unauthorized"}
    assert requests.get(srv.url + "/get_model_info").status_code == 401
    assert requests.get(srv.url + "/health").status_code == 200  # probes need no key
    assert requests.get(srv.url + "/metrics").status_code == 404  # no --enable-metrics
    auth = {"Authorization": "Bearer secret"}
    whole = generate(srv, body, headers=auth)
    assert "text" not in whole  # --skip-tokenizer-init: ids only
    r = post_json(srv.url, "/generate", {"text": "hi"}, headers=auth)
    assert r.status_code == 400 and "skip_tokenizer_init" in r.json()["error"]["message"]
    # Incremental: every chunk carries only its new ids and log-probs.
    events = open_stream(srv, body, headers=auth).rest()
    chunks = [json.loads(e) for e in events[:-1]]
    assert sum((c["output_ids"] for c in chunks), []) == whole["output_ids"]
    assert sum((c["meta_info"]["output_token_logprobs"] for c in chunks), []) == \
        whole["meta_info"]["output_token_logprobs"]
    assert srv.terminate() == 0


def test_pause_continue_abort_and_flush(slow_server):
    srv = slow_server
    long_body = {"input_ids": PROMPT, "sampling_params": {"max_new_tokens": 300,
                                                          "ignore_eos": True}}
    # in_place: the request stays (flush refuses, health fails), then finishes after continue.
    stream = open_stream(srv, dict(long_body, rid="keep"))
    stream.first()
    r = post_json(srv.url, "/pause_generation", {"mode": "in_place"})
    assert r.json() == {"message": "Generation paused successfully.", "status": "ok"}
    r = requests.get(srv.url + "/flush_cache")
    assert r.status_code == 400 and r.text.startswith("Cache flushed.")
    assert requests.get(srv.url + "/health").status_code == 503
    r = post_json(srv.url, "/continue_generation", {})
    assert r.json() == {"message": "Generation continued successfully.", "status": "ok"}
    assert last_chunk(stream)["meta_info"]["finish_reason"] == {"type": "length", "length": 300}
    assert requests.get(srv.url + "/flush_cache").status_code == 200
    assert requests.get(srv.url + "/health").status_code == 200
    # /abort_request by rid (a prefix, as SGLang matches) while paused.
    stream = open_stream(srv, dict(long_body, rid="victim-1"))
    stream.first()
    post_json(srv.url, "/pause_generation", {"mode": "retract"})
    r = post_json(srv.url, "/abort_request", {"rid": "victim"})
    assert r.status_code == 200 and r.text == ""
    assert last_chunk(stream)["meta_info"]["finish_reason"] == {
        "type": "abort", "message": "Aborted", "status_code": None, "err_type": None}
    post_json(srv.url, "/continue_generation", {})
    # The default pause (abort): running requests end as aborted, new ones wait for continue.
    stream = open_stream(srv, long_body)
    stream.first()
    assert post_json(srv.url, "/pause_generation", {}).status_code == 200
    assert last_chunk(stream)["meta_info"]["finish_reason"]["type"] == "abort"
    assert requests.get(srv.url + "/flush_cache").status_code == 200  # slime's next step
    waiting = {}
    t = threading.Thread(target=lambda: waiting.update(out=greedy(srv, max_new=3)))
    t.start()
    assert wait_until(lambda: requests.get(srv.url + "/get_load").json()[0]["num_waiting_reqs"])
    assert "out" not in waiting
    post_json(srv.url, "/continue_generation", {})
    t.join(30)
    assert waiting["out"]["meta_info"]["finish_reason"]["type"] == "length"
    # abort_all, and bad bodies.
    stream = open_stream(srv, long_body)
    stream.first()
    assert post_json(srv.url, "/abort_request", {"abort_all": True}).status_code == 200
    assert last_chunk(stream)["meta_info"]["finish_reason"]["type"] == "abort"
    r = post_json(srv.url, "/abort_request", {"rid": 5})
    assert r.status_code == 400 and r.json()["object"] == "error"
    r = post_json(srv.url, "/pause_generation", {"mode": "sideways"})
    assert r.status_code == 400 and r.json()["code"] == 400
    assert wait_until(lambda: idle(srv))

# ---------------------------------------------------------------------------------------------
# Bad input: SGLang's error body and status, and the server keeps serving.

VALIDATION = "validation"  # FastAPI's {"object":"error","message",...,"code":400}
VALUE = "value"            # SGLang's {"error":{"message":...}}

BAD = [
    ({}, VALUE, "Either text, input_ids or input_embeds should be provided."),
    ({"input_ids": "abc"}, VALIDATION, "input_ids"),
    ({"input_ids": [1, 2.5]}, VALIDATION, "input_ids"),
    ({"input_ids": [1, 2], "stream": "yes"}, VALIDATION, "stream"),
    ({"input_ids": [1, 2], "sampling_params": 3}, VALIDATION, "sampling_params"),
    ({"input_ids": [1, 2], "samplng_params": {}}, VALIDATION, "samplng_params"),
    ({"input_ids": [1, 2], "image_data": "x.png"}, VALIDATION, "image_data"),
    ({"input_ids": []}, VALUE, "input_ids cannot be empty."),
    ({"input_ids": [[1], []]}, VALUE, "input_ids cannot be empty."),
    ({"input_ids": [1, VOCAB]}, VALUE, str(VOCAB)),
    ({"input_ids": [1, -3]}, VALUE, "-3"),
    ({"input_ids": [1, 2**40]}, VALUE, str(2**40)),
    ({"input_ids": [1], "sampling_params": {"temperature": "hot"}}, VALUE, "temperature"),
    ({"input_ids": [1], "sampling_params": {"top_p": 0}}, VALUE, "top_p must be in (0, 1]"),
    ({"input_ids": [1], "sampling_params": {"top_p": 1.5}}, VALUE, "top_p must be in (0, 1]"),
    ({"input_ids": [1], "sampling_params": {"top_k": 0}}, VALUE, "top_k"),
    ({"input_ids": [1], "sampling_params": {"max_new_tokens": -1}}, VALUE, "max_new_tokens"),
    ({"input_ids": [1], "sampling_params": {"repetition_penalty": 3}}, VALUE,
     "repetition_penalty"),
    ({"input_ids": [1], "sampling_params": {"max_new_token": 3}}, VALUE, "max_new_token"),
    ({"input_ids": [1], "sampling_params": {"regex": "a+"}}, VALUE, "regex"),
    ({"input_ids": [1] * CONTEXT}, VALUE,
     f"The input ({CONTEXT} tokens) is longer than the model's context length ({CONTEXT} "
     "tokens)."),
    ({"input_ids": [1] * 10, "sampling_params": {"max_new_tokens": CONTEXT}}, VALUE,
     f"Requested token count exceeds the model's maximum context length of {CONTEXT} tokens."),
    ({"input_ids": [[1], [2]], "rid": ["only-one"]}, VALUE, "rids length mismatch"),
    ({"input_ids": [1, 2], "return_logprob": True, "logprob_start_len": 5}, VALUE,
     "logprob_start_len"),
]


@pytest.mark.parametrize("body,kind,needle", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_gets_sglangs_error_and_the_server_keeps_serving(server, body, kind, needle):
    r = post_json(server.url, "/generate", body)
    assert r.status_code == 400, r.text
    j = r.json()
    if kind == VALIDATION:
        assert set(j) == {"object", "message", "type", "param", "code"}
        assert j["object"] == "error" and j["type"] == "Bad Request" and j["code"] == 400
        assert j["param"] is None and needle in j["message"]
    else:
        assert list(j) == ["error"] and list(j["error"]) == ["message"]
        assert needle in j["error"]["message"], j
    # In a stream a ValueError is a 200 with an error event, then [DONE] (FastAPI's validation
    # errors stay 400).
    if kind == VALUE and isinstance(body, dict):
        r = post_json(server.url, "/generate", dict(body, stream=True), stream=True)
        assert r.status_code == 200
        events = sse_events(r)
        assert events[-1] == "[DONE]" and len(events) == 2
        assert needle in json.loads(events[0])["error"]["message"]
    assert greedy(server, max_new=2)["meta_info"]["finish_reason"]["type"] == "length"


def test_malformed_json_and_oversized_bodies(server):
    r = requests.post(server.url + "/generate", data="{not json",
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["object"] == "error"
    r = requests.post(server.url + "/generate", data="[" * 100000)
    assert r.status_code == 400 and r.json()["object"] == "error"
    big = json.dumps({"input_ids": [1] * 400000})  # > --max-body-bytes 1000000
    r = requests.post(server.url + "/generate", data=big)
    assert r.status_code == 400 and "max-body-bytes" in r.json()["error"]["message"]
    r = requests.post(server.url + "/update_weights_from_disk", data="{}")
    assert r.status_code == 400 and "model_path" in r.json()["message"]
    assert greedy(server, max_new=2)["meta_info"]["finish_reason"]["type"] == "length"


# ---------------------------------------------------------------------------------------------
# Weight updates from disk.

def test_update_weights_from_disk(fp8rl, start, slow_model, tokenizer, tmp_path_factory, tmp_path):
    srv = start(slow_model, "--dtype", "float32")
    before = greedy(srv, max_new=16)
    new = make_model(fp8rl, tmp_path_factory, "slow-new", tokenizer, SLOW, seed=1)
    wide = make_model(fp8rl, tmp_path_factory, "slow-wide", tokenizer, SLOW, seed=1,
                      hidden_size=96)
    # The config matches but one tensor has the wrong shape.
    broken = tmp_path_factory.mktemp("models") / "slow-broken"
    shutil.copytree(new, broken)
    tensors = load_file(str(broken / "model.safetensors"))
    down = "model.layers.1.mlp.down_proj.weight"
    tensors[down] = np.ascontiguousarray(tensors[down].T)
    save_file(tensors, str(broken / "model.safetensors"))

    def update(path, **kw):
        return post_json(srv.url, "/update_weights_from_disk", {"model_path": str(path), **kw})

    for path, needle in [(wide, "hidden_size"), (broken, down),
                         (tmp_path / "missing", "Failed to get weights iterator")]:
        r = update(path, weight_version="bad")
        assert r.status_code == 400, r.text
        j = r.json()
        assert j["success"] is False and j["num_paused_requests"] == 0 and needle in j["message"]
        # The old weights keep serving, under the old version.
        again = greedy(srv, max_new=16)
        assert again["output_ids"] == before["output_ids"]
        assert again["meta_info"]["weight_version"] == "default"
    r = update(new, weight_version="1")
    assert r.status_code == 200
    assert r.json() == {"success": True, "num_paused_requests": 0,
                        "message": "Succeeded to update model weights. Weight version updated "
                                   "to 1."}
    after = greedy(srv, max_new=16)
    assert after["output_ids"] != before["output_ids"]
    assert after["meta_info"]["weight_version"] == "1"
    logits, lps = probe(tmp_path, new, PROMPT + after["output_ids"])
    check_greedy_against_probe(after, logits, lps)
    info = requests.get(srv.url + "/get_model_info").json()
    assert info["weight_version"] == "1" and info["model_path"] == str(new)
    # An update while a request streams waits for it: the request sees one version only.
    stream = open_stream(srv, {"input_ids": PROMPT, "sampling_params": {"max_new_tokens": 200,
                                                                        "ignore_eos": True}})
    stream.first()
    r = update(slow_model, weight_version="2")
    chunks = [json.loads(e) for e in stream.rest()[:-1]]
    assert r.status_code == 200 and len(chunks) == 199
    assert {c["meta_info"]["weight_version"] for c in chunks} == {"1"}
    back = greedy(srv, max_new=16)
    assert back["output_ids"] == before["output_ids"] and back["meta_info"]["weight_version"] == "2"
    # Paused in place, the update applies at once and the paused request continues with it.
    stream = open_stream(srv, {"input_ids": PROMPT, "sampling_params": {"max_new_tokens": 200,
                                                                        "ignore_eos": True}})
    stream.first()
    post_json(srv.url, "/pause_generation", {"mode": "in_place"})
    r = update(new, weight_version="3")
    assert r.json()["num_paused_requests"] == 1
    post_json(srv.url, "/continue_generation", {})
    assert last_chunk(stream)["meta_info"]["weight_version"] == "3"
    assert srv.terminate() == 0

# ---------------------------------------------------------------------------------------------
# Health as the sglang router polls it, and a SIGTERM drain.

def test_router_health_poller_and_sigterm_drain(start, slow_model):
    srv = start(slow_model, "--shutdown-timeout", 30, ready=False)
    poller = RouterHealthPoller(srv.url).start()
    try:
        assert poller.wait_for(True, 30), poller.history
        # A long request in flight when SIGTERM arrives finishes; the router sees 503s, and new
        # requests are refused.
        stream = open_stream(srv, {"input_ids": PROMPT, "sampling_params": {
            "max_new_tokens": 200, "ignore_eos": True}})
        stream.first()
        srv.proc.send_signal(signal.SIGTERM)
        assert poller.wait_for(False, 30), poller.history
        assert 503 in [code for _, code, _ in poller.history]
        r = post_json(srv.url, "/generate", {"input_ids": PROMPT})
        assert r.status_code == 503 and r.json()["code"] == 503
        assert last_chunk(stream)["meta_info"]["finish_reason"] == {"type": "length",
                                                                     "length": 200}
        assert srv.proc.wait(30) == 0, srv.read_log()
        assert "rollout: stopped" in srv.read_log()
    finally:
        poller.stop()

# ---------------------------------------------------------------------------------------------
# Soak: 64 concurrent clients, every answer complete, RSS flat, a client that hangs up.

def soak_client(srv, index, stop, errors, counts):
    rng = random.Random(index)
    s = requests.Session()
    while not stop.is_set():
        try:
            kind = index % 4 if index < 63 else 4
            n_new = rng.randint(4, 24)
            prompt = [rng.randrange(3, VOCAB) for _ in range(rng.randint(1, 40))]
            sp = {"max_new_tokens": n_new, "temperature": rng.choice([0, 0.7, 1.0]),
                  "top_p": rng.choice([1.0, 0.9]), "sampling_seed": rng.randrange(1000)}
            if kind in (0, 3):  # slime's payload; a text prompt
                body = {"sampling_params": sp, "return_logprob": True}
                body.update({"input_ids": prompt} if kind == 0 else {"text": "the fox " * 5})
                r = s.post(srv.url + "/generate", json=body, timeout=60)
                assert r.status_code == 200, r.text
                outs = [r.json()]
            elif kind == 1:  # stream
                r = s.post(srv.url + "/generate", json={"input_ids": prompt, "sampling_params": sp,
                                                       "stream": True, "return_logprob": True},
                           stream=True, timeout=60)
                assert r.status_code == 200, r.text
                events = sse_events(r)
                assert events[-1] == "[DONE]", events[-1:]
                outs = [json.loads(events[-2])]
            elif kind == 2:  # a batch with n = 2
                r = s.post(srv.url + "/generate", json={
                    "input_ids": [prompt, prompt[:3]], "return_logprob": True,
                    "sampling_params": dict(sp, n=2)}, timeout=60)
                assert r.status_code == 200, r.text
                outs = r.json()
                assert len(outs) == 4
            else:  # hangs up after the first chunk
                r = requests.post(srv.url + "/generate", json={
                    "input_ids": prompt, "stream": True,
                    "sampling_params": {"max_new_tokens": 200, "ignore_eos": True}},
                    stream=True, timeout=60)
                SseStream(r).first()
                r.close()
                counts[index] += 1
                continue
            for o in outs:
                m = o["meta_info"]
                assert m["finish_reason"]["type"] in ("length", "stop"), m["finish_reason"]
                assert m["completion_tokens"] == len(o["output_ids"]) == \
                    len(m["output_token_logprobs"]) <= n_new
                assert m["weight_version"] == "default"
            counts[index] += 1
        except Exception as e:  # noqa: BLE001 - every failure is reported at the end
            errors.append(f"client {index}: {type(e).__name__}: {e}")
            return


def run_soak(srv, seconds):
    stop, errors, counts = threading.Event(), [], [0] * 64
    threads = [threading.Thread(target=soak_client, args=(srv, i, stop, errors, counts))
               for i in range(64)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(120)
    assert not errors, errors[:5]
    assert all(c > 0 for c in counts), counts
    return sum(counts)


def test_soak_64_clients(server):
    run_soak(server, 4)  # warm-up: thread pools, allocator arenas, caches
    rss_before = server.rss_kib()
    done = run_soak(server, 15)
    rss_after = server.rss_kib()
    assert done > 64
    assert wait_until(lambda: idle(server))  # nothing leaked: no request, no KV token
    assert rss_after - rss_before < 16 * 1024, (rss_before, rss_after)
    assert requests.get(server.url + "/health").status_code == 200
