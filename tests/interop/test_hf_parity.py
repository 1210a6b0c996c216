"""fp8rl's CPU decoder against transformers: a tiny random Qwen3 (and Qwen2) built and saved by
transformers (fp32, save_pretrained) is run by fp8rl_model_probe on two packed sequences; its
logits and every parameter gradient of sum(log p(next token)) must match transformers' to a
relative error of 1e-4. Skips where torch or transformers are absent (CI)."""
import os
import subprocess

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from safetensors.numpy import load_file, save_file  # noqa: E402

TOL = 1e-4
SEQS = [[5, 17, 3, 88, 42, 9, 61, 0, 33], [71, 2, 96, 14, 50]]


@pytest.fixture(scope="module")
def probe():
    path = os.environ.get("FP8RL_MODEL_PROBE")
    if not path or not os.path.exists(path):
        pytest.fail("FP8RL_MODEL_PROBE (path of fp8rl_model_probe) is not set; run through ctest")
    return path


def rope_kwargs(theta):
    major = int(transformers.__version__.split(".")[0])
    if major >= 5:
        return {"rope_parameters": {"rope_type": "default", "rope_theta": theta}}
    return {"rope_theta": theta}


def make_model(kind, tied):
    common = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                  rms_norm_eps=1e-6, tie_word_embeddings=tied, initializer_range=0.2,
                  **rope_kwargs(10000.0))
    torch.manual_seed(0)
    if kind == "qwen3":
        cfg = transformers.Qwen3Config(head_dim=16, attention_bias=False, **common)
        model = transformers.Qwen3ForCausalLM(cfg)
    else:
        cfg = transformers.Qwen2Config(**common)
        model = transformers.Qwen2ForCausalLM(cfg)
    model = model.float()
    with torch.no_grad():  # norms and biases away from their 1 / 0 initialisation
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def reference(model):
    """Logits of each sequence alone, and gradients of the summed next-token log-probs."""
    model.zero_grad()
    logits, loss = [], 0.0
    for seq in SEQS:
        ids = torch.tensor([seq])
        out = model(input_ids=ids).logits[0]
        lp = torch.log_softmax(out, dim=-1)[:-1].gather(1, ids[0, 1:, None]).sum()
        loss = loss + lp
        logits.append(out.detach().numpy())
    loss.backward()
    return np.concatenate(logits), {n: p.grad.numpy() for n, p in model.named_parameters()}


def rel(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@pytest.mark.parametrize("kind,tied", [("qwen3", False), ("qwen3", True), ("qwen2", False)])
def test_logits_and_gradients_match_transformers(tmp_path, probe, kind, tied):
    model = make_model(kind, tied)
    model.save_pretrained(tmp_path / "model", safe_serialization=True)
    tokens = np.array(sum(SEQS, []), dtype=np.int32)
    cu = np.cumsum([0] + [len(s) for s in SEQS]).astype(np.int32)
    save_file({"tokens": tokens, "cu_seqlens": cu}, str(tmp_path / "tokens.safetensors"))
    p = subprocess.run([probe, tmp_path / "model", tmp_path / "tokens.safetensors",
                        tmp_path / "out.safetensors"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    got = load_file(str(tmp_path / "out.safetensors"))

    ref_logits, ref_grads = reference(model)
    assert got["logits"].shape == ref_logits.shape
    assert rel(got["logits"], ref_logits) <= TOL
    grads = {k[len("grad."):]: v for k, v in got.items() if k.startswith("grad.")}
    assert set(grads) == set(ref_grads)
    errors = {n: rel(grads[n], ref_grads[n]) for n in grads}
    assert max(errors.values()) <= TOL, sorted(errors.items(), key=lambda kv: -kv[1])[:5]
