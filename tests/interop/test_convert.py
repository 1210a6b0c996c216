"""`fp8rl tiny-model` and `fp8rl convert` against Python safetensors and an independent NumPy +
ml_dtypes implementation of the DeepSeek-V3 / TransformerEngine blockwise rules and slime's INT4
pack-quantized format."""
import json
import os

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file

E4M3 = ml_dtypes.float8_e4m3fn
BF16 = ml_dtypes.bfloat16
SMALL = ["--hidden-size", 256, "--intermediate-size", 320, "--num-layers", 2, "--vocab-size", 384,
         "--num-attention-heads", 4, "--num-key-value-heads", 2, "--head-dim", 64]


def load_dir(d):
    """All tensors of an HF folder (single file or shards) via safetensors' own loader."""
    index = os.path.join(d, "model.safetensors.index.json")
    files = (sorted(set(json.load(open(index))["weight_map"].values())) if os.path.exists(index)
             else ["model.safetensors"])
    out = {}
    for f in files:
        out.update(load_file(os.path.join(d, f)))
    return out


def qwen3_names(cfg):
    names = ["model.embed_tokens.weight", "model.norm.weight"]
    if not cfg["tie_word_embeddings"]:
        names.append("lm_head.weight")
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        names += [p + n for n in [
            "input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_proj.weight",
            "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
            "self_attn.q_norm.weight", "self_attn.k_norm.weight", "mlp.gate_proj.weight",
            "mlp.up_proj.weight", "mlp.down_proj.weight"]]
    return sorted(names)


def is_quantized_linear(name):
    return name.endswith("_proj.weight")


# --- independent references -------------------------------------------------------------------

def ref_quant_128x128(w, pow2=True):
    """TransformerEngine's rule per 128x128 block: scale = 448/amax (float32 division), pow2 keeps
    the exponent only, q = e4m3(clip(w*scale)), scale_inv = 1/scale."""
    w = w.astype(np.float32)
    n, k = w.shape
    q = np.zeros((n, k), dtype=E4M3)
    s = np.zeros(((n + 127) // 128, (k + 127) // 128), dtype=np.float32)
    for bi in range(s.shape[0]):
        for bj in range(s.shape[1]):
            blk = w[bi * 128:(bi + 1) * 128, bj * 128:(bj + 1) * 128]
            amax = np.float32(np.max(np.abs(blk)))
            if amax == 0 or not np.isfinite(amax):
                scale = np.float32(1)
            else:
                scale = np.float32(448) / amax
                if pow2:
                    scale = (np.array(scale).view(np.uint32) & np.uint32(0xFF800000)).view(np.float32)
            s[bi, bj] = np.float32(1) / np.float32(scale)
            q[bi * 128:(bi + 1) * 128, bj * 128:(bj + 1) * 128] = np.clip(
                blk * np.float32(scale), -448, 448).astype(E4M3)
    return q, s


def ref_int4(w, g):
    """Symmetric per-group INT4 with the scale rounded to bf16 before use (fp8rl's contract)."""
    w = w.astype(np.float32)
    n, k = w.shape
    groups = (k + g - 1) // g
    q = np.zeros((n, k), dtype=np.int32)
    s = np.zeros((n, groups), dtype=BF16)
    for j in range(groups):
        blk = w[:, j * g:(j + 1) * g]
        amax = np.max(np.abs(blk), axis=1).astype(np.float32)
        scale = np.maximum(amax / np.float32(7), np.float32(1e-5)).astype(BF16)
        s[:, j] = scale
        q[:, j * g:(j + 1) * g] = np.clip(np.rint(blk / scale.astype(np.float32)[:, None]), -7, 7)
    return q, s


def unpack_int4(packed, k):
    words = packed.astype(np.uint32)
    nib = np.stack([(words >> (4 * j)) & 0xF for j in range(8)], axis=-1).reshape(packed.shape[0], -1)
    return nib[:, :k].astype(np.int32) - 8


# --- tests ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory, fp8rl_bin):
    import subprocess
    d = tmp_path_factory.mktemp("m") / "tiny"
    subprocess.run([fp8rl_bin, "tiny-model", "--save-dir", str(d), "--seed", "7", *map(str, SMALL)],
                   check=True, capture_output=True)
    return str(d)


def test_tiny_model_is_a_qwen3_checkpoint(tiny):
    cfg = json.load(open(os.path.join(tiny, "config.json")))
    assert cfg["model_type"] == "qwen3" and cfg["architectures"] == ["Qwen3ForCausalLM"]
    assert cfg["hidden_size"] == 256 and cfg["num_hidden_layers"] == 2 and cfg["head_dim"] == 64
    t = load_dir(tiny)
    assert sorted(t) == qwen3_names(cfg)
    assert t["model.layers.0.self_attn.q_proj.weight"].shape == (256, 256)
    assert t["model.layers.0.self_attn.k_proj.weight"].shape == (128, 256)
    assert t["model.layers.1.mlp.down_proj.weight"].shape == (256, 320)
    assert all(v.dtype == BF16 for v in t.values())
    w = t["model.layers.0.mlp.up_proj.weight"].astype(np.float32)
    assert 0.015 < w.std() < 0.025 and abs(w.mean()) < 0.002  # N(0, 0.02)


def test_tiny_model_shards(tmp_path, run):
    d = tmp_path / "sharded"
    run("tiny-model", "--save-dir", d, "--max-shard-bytes", 200000, *SMALL)
    index = json.load(open(d / "model.safetensors.index.json"))
    files = set(index["weight_map"].values())
    assert len(files) > 1
    t = load_dir(d)
    assert set(index["weight_map"]) == set(t)
    assert index["metadata"]["total_size"] == sum(v.nbytes for v in t.values())
    for f in files:  # every tensor sits in the shard the index names
        assert all(index["weight_map"][n] == f for n in load_file(d / f))


@pytest.mark.parametrize("mode", ["env", "fp32"])
def test_convert_fp8_matches_reference(tiny, tmp_path, run, mode):
    out = tmp_path / "fp8"
    run("convert", "--model-dir", tiny, "--save-dir", out, "--format", "fp8", "--scale-mode", mode)
    src, got = load_dir(tiny), load_dir(out)
    cfg = json.load(open(out / "config.json"))
    qc = cfg["quantization_config"]
    assert {k: qc[k] for k in ["quant_method", "fmt", "activation_scheme", "weight_block_size"]} == {
        "quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
        "weight_block_size": [128, 128]}
    assert "model.embed_tokens" in qc["modules_to_not_convert"]
    assert "lm_head" in qc["modules_to_not_convert"]
    assert os.path.exists(out / "generation_config.json")
    for name, w in src.items():
        if not is_quantized_linear(name):
            assert got[name].dtype == w.dtype and np.array_equal(got[name].view(np.uint16),
                                                                 w.view(np.uint16)), name
            assert name + "_scale_inv" not in got
            continue
        q_ref, s_ref = ref_quant_128x128(w.astype(np.float32), pow2=(mode == "env"))
        assert got[name].dtype == E4M3 and got[name + "_scale_inv"].dtype == np.float32
        assert np.array_equal(got[name].view(np.uint8), q_ref.view(np.uint8)), name
        assert np.array_equal(got[name + "_scale_inv"].view(np.uint32), s_ref.view(np.uint32)), name
        # Dequantized (DeepSeek-V3: block * weight_scale_inv) within E4M3's half-ulp (2^-4 rel).
        n, k = w.shape
        deq = got[name].astype(np.float32) * np.repeat(np.repeat(
            got[name + "_scale_inv"], 128, 0), 128, 1)[:n, :k]
        wf = w.astype(np.float32)
        err = np.abs(deq - wf)
        bound = np.abs(wf) * 2.0**-4 + np.repeat(np.repeat(s_ref, 128, 0), 128, 1)[:n, :k] * 2.0**-10
        assert np.all(err <= bound), name


def test_convert_int4_matches_reference(tiny, tmp_path, run):
    out = tmp_path / "int4"
    run("convert", "--model-dir", tiny, "--save-dir", out, "--format", "int4", "--group-size", 64)
    src, got = load_dir(tiny), load_dir(out)
    qc = json.load(open(out / "config.json"))["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["format"] == "pack-quantized"
    assert qc["config_groups"]["group_0"]["weights"] == {
        "num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 64,
        "dynamic": False, "observer": "minmax", "observer_kwargs": {}, "actorder": None,
        "block_structure": None}
    assert qc["config_groups"]["group_0"]["targets"] == ["Linear"]
    for name, w in src.items():
        base = name[:-len(".weight")]
        if not is_quantized_linear(name):
            assert name in got and base + ".weight_packed" not in got
            continue
        n, k = w.shape
        assert got[base + ".weight_packed"].dtype == np.int32
        assert got[base + ".weight_packed"].shape == (n, (k + 7) // 8)
        assert got[base + ".weight_scale"].dtype == BF16
        assert list(got[base + ".weight_shape"]) == [n, k]
        q_ref, s_ref = ref_int4(w, 64)
        assert np.array_equal(unpack_int4(got[base + ".weight_packed"], k), q_ref), name
        assert np.array_equal(got[base + ".weight_scale"].view(np.uint16), s_ref.view(np.uint16))


def test_convert_sharded_keeps_shards(tmp_path, run):
    src = tmp_path / "src"
    run("tiny-model", "--save-dir", src, "--max-shard-bytes", 200000, *SMALL)
    out = tmp_path / "fp8"
    run("convert", "--model-dir", src, "--save-dir", out)
    index = json.load(open(out / "model.safetensors.index.json"))
    t = load_dir(out)
    assert set(index["weight_map"]) == set(t)
    assert "model.layers.0.mlp.up_proj.weight_scale_inv" in t
    assert index["metadata"]["total_size"] == sum(v.nbytes for v in t.values())


def test_inspect_reports_dequantization_error(tiny, tmp_path, run):
    out = tmp_path / "fp8"
    run("convert", "--model-dir", tiny, "--save-dir", out)
    p = run("inspect", "--model-dir", out, "--against", tiny)
    last = p.stdout.strip().splitlines()[-1]
    assert last.startswith("max rel. error:")
    fp8_err = float(last.split("fp8-128x128")[1].split("(")[0])
    assert 0 < fp8_err < 0.05


def no_leftovers(parent):
    return [p for p in os.listdir(parent) if ".tmp-" in p]


def test_convert_refuses_existing_output(tiny, tmp_path, run):
    out = tmp_path / "exists"
    out.mkdir()
    p = run("convert", "--model-dir", tiny, "--save-dir", out, check=False)
    assert p.returncode != 0 and "exists" in p.stderr
    assert os.listdir(out) == []


def copy_model(src, dst):
    os.makedirs(dst)
    for f in os.listdir(src):
        with open(os.path.join(src, f), "rb") as a, open(os.path.join(dst, f), "wb") as b:
            b.write(a.read())


@pytest.mark.parametrize("damage,needle", [
    ("truncate", "model.safetensors"),
    ("header_len", "model.safetensors"),
    ("config_field", "hidden_size"),
    ("config_json", "config.json"),
])
def test_convert_rejects_corrupt_input(tiny, tmp_path, run, damage, needle):
    bad = tmp_path / "bad"
    copy_model(tiny, bad)
    st = bad / "model.safetensors"
    if damage == "truncate":
        data = open(st, "rb").read()
        open(st, "wb").write(data[:len(data) // 2])
    elif damage == "header_len":
        data = bytearray(open(st, "rb").read())
        data[0:8] = (len(data) * 4).to_bytes(8, "little")
        open(st, "wb").write(bytes(data))
    elif damage == "config_field":
        cfg = json.load(open(bad / "config.json"))
        del cfg["hidden_size"]
        json.dump(cfg, open(bad / "config.json", "w"))
    else:
        open(bad / "config.json", "w").write("{ not json")
    out = tmp_path / "out"
    p = run("convert", "--model-dir", bad, "--save-dir", out, check=False)
    assert p.returncode != 0
    assert needle in p.stderr, p.stderr
    assert not out.exists() and no_leftovers(tmp_path) == []
