"""fp8rl's Megatron torch_dist checkpoints (trainer/checkpoint.h), read without PyTorch.

The files are parsed with Python's own zipfile and pickle: an Unpickler whose find_class maps the
torch classes to small stand-ins rebuilds common.pt, .metadata and every chunk's data.pkl. The
tensors are checked bitwise against a NumPy construction of Megatron's layout (fused QKV per query
group, gate/up fc1, layers stacked, vocabulary padded; BF16 through ml_dtypes) from the HF-named
tensors the probe dumps, which is written here from reference/ckpt.md and slime's
megatron_to_hf/qwen2.py, not from fp8rl's code. Resume: N steps, save, a new process loads and
takes M steps; losses and every tensor equal N + M uninterrupted steps bit for bit.

The probe (trainer/tools/ckpt_probe.cc) arrives in FP8RL_CKPT_PROBE.
"""
import argparse
import collections
import io
import json
import os
import pickle
import pickletools
import struct
import subprocess
import zipfile

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file

PROBE = os.environ.get("FP8RL_CKPT_PROBE")
if not PROBE:
    pytest.skip("FP8RL_CKPT_PROBE is not set (run through ctest)", allow_module_level=True)

QWEN3 = dict(model_type="qwen3", vocab_size=50, hidden_size=32, intermediate_size=48,
             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
             max_position_embeddings=64, rms_norm_eps=1e-6, rope_theta=10000.0,
             tie_word_embeddings=False, torch_dtype="float32")
# Qwen2: q/k/v biases, no QK-norm; here with tied embeddings and 3 layers.
QWEN2_TIED = dict(QWEN3, model_type="qwen2", num_hidden_layers=3, tie_word_embeddings=True)
del QWEN2_TIED["head_dim"]

METADATA_JSON = {"sharded_backend": "torch_dist", "sharded_backend_version": 1,
                 "common_backend": "torch", "common_backend_version": 1}
# What ckpt.md §3 lists for a protocol-2 writer (plus BINPERSID for data.pkl).
ALLOWED_OPCODES = {"PROTO", "GLOBAL", "MARK", "EMPTY_TUPLE", "EMPTY_DICT", "EMPTY_LIST", "TUPLE",
                   "TUPLE1", "TUPLE2", "TUPLE3", "NEWOBJ", "REDUCE", "BUILD", "SETITEMS",
                   "APPENDS", "BINUNICODE", "BININT1", "BININT2", "BININT", "LONG1", "NONE",
                   "NEWTRUE", "NEWFALSE", "BINFLOAT", "STOP", "BINPERSID"}


# ---- torch stand-ins -------------------------------------------------------------------------
class Dtype:
    def __init__(self, name):
        self.name = name


class Marker:  # torch.strided, torch.contiguous_format
    def __init__(self, name):
        self.name = name


class TorchSize(tuple):
    pass


class Record:
    """A dataclass of torch.distributed.checkpoint: NEWOBJ then BUILD with its field dict."""
    kind = None


def record_class(name):
    return type(name, (Record,), {"kind": name})


class TensorProperties:
    def __init__(self, dtype, layout, requires_grad, memory_format, pin_memory):
        self.dtype, self.layout, self.requires_grad = dtype, layout, requires_grad
        self.memory_format, self.pin_memory = memory_format, pin_memory


StorageRef = collections.namedtuple("StorageRef", "cls key location numel")
TensorRef = collections.namedtuple("TensorRef", "storage offset size stride requires_grad hooks")
DTYPES = {"bfloat16": (ml_dtypes.bfloat16, "BFloat16Storage"), "float32": (np.float32, "FloatStorage")}


class TorchFreeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "torch" and name in DTYPES:
            return Dtype(name)
        if module == "torch" and name == "Size":
            return TorchSize
        if module == "torch" and name in ("strided", "contiguous_format"):
            return Marker(name)
        if module == "torch" and name.endswith("Storage"):
            return name
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return TensorRef
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("argparse", "Namespace"):
            return argparse.Namespace
        if module == "torch.distributed.checkpoint.metadata" and name == "TensorProperties":
            return TensorProperties
        if module == "torch.distributed.checkpoint.metadata" or (
                module, name) == ("torch.distributed.checkpoint.filesystem", "_StorageInfo"):
            return record_class(name)
        raise pickle.UnpicklingError(f"unexpected global {module}.{name}")

    def persistent_load(self, pid):
        assert pid[0] == "storage", pid
        return StorageRef(*pid[1:])


def unpickle(data):
    ops = {op.name for op, _, _ in pickletools.genops(data)}
    assert data[:2] == b"\x80\x02", "not protocol 2"
    assert ops <= ALLOWED_OPCODES, ops - ALLOWED_OPCODES
    return TorchFreeUnpickler(io.BytesIO(data)).load()


# ---- the probe -------------------------------------------------------------------------------
def probe(tmp_path, config, *args, check=True):
    cfg = tmp_path / f"config-{config['model_type']}-{config['num_hidden_layers']}.json"
    cfg.write_text(json.dumps(config))
    p = subprocess.run([PROBE, "--config", str(cfg), *map(str, args)], capture_output=True,
                       text=True, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"probe {args} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    lines = [json.loads(l) for l in p.stdout.splitlines()] if p.returncode == 0 else []
    return p, [l for l in lines if "step" in l]


# ---- Megatron's layout, from the HF tensors ---------------------------------------------------
def megatron_layout(config, hf, suffix, divisible_by=128):
    """{key: float32 array} for one family (suffix '' = weights, '.master', '.exp_avg', ...)."""
    L, nq, nkv = config["num_hidden_layers"], config["num_attention_heads"], config["num_key_value_heads"]
    d = config.get("head_dim", config["hidden_size"] // nq)
    V = config["vocab_size"]
    Vp = -(-V // divisible_by) * divisible_by
    get = lambda name: hf[f"hf/{name}{suffix}"]

    def padded(x):
        return np.concatenate([x, np.zeros((Vp - V, x.shape[1]), np.float32)])

    def per_layer(fn):
        return np.stack([fn(f"model.layers.{i}.") for i in range(L)])

    def qkv(p, kind):
        q, k, v = (get(f"{p}self_attn.{n}_proj.{kind}") for n in "qkv")
        qpg = nq // nkv
        parts = []
        for g in range(nkv):
            parts += [q[g * qpg * d:(g + 1) * qpg * d], k[g * d:(g + 1) * d], v[g * d:(g + 1) * d]]
        return np.concatenate(parts)

    out = {"embedding.word_embeddings.weight": padded(get("model.embed_tokens.weight")),
           "decoder.layers.self_attention.linear_qkv.layer_norm_weight":
               per_layer(lambda p: get(p + "input_layernorm.weight")),
           "decoder.layers.self_attention.linear_qkv.weight": per_layer(lambda p: qkv(p, "weight"))}
    if config["model_type"] == "qwen2":
        out["decoder.layers.self_attention.linear_qkv.bias"] = per_layer(lambda p: qkv(p, "bias"))
    if config["model_type"] == "qwen3":
        out["decoder.layers.self_attention.q_layernorm.weight"] = per_layer(
            lambda p: get(p + "self_attn.q_norm.weight"))
        out["decoder.layers.self_attention.k_layernorm.weight"] = per_layer(
            lambda p: get(p + "self_attn.k_norm.weight"))
    out.update({
        "decoder.layers.self_attention.linear_proj.weight": per_layer(lambda p: get(p + "self_attn.o_proj.weight")),
        "decoder.layers.mlp.linear_fc1.layer_norm_weight":
            per_layer(lambda p: get(p + "post_attention_layernorm.weight")),
        "decoder.layers.mlp.linear_fc1.weight": per_layer(
            lambda p: np.concatenate([get(p + "mlp.gate_proj.weight"), get(p + "mlp.up_proj.weight")])),
        "decoder.layers.mlp.linear_fc2.weight": per_layer(lambda p: get(p + "mlp.down_proj.weight")),
        "decoder.final_layernorm.weight": get("model.norm.weight"),
    })
    if not config["tie_word_embeddings"]:
        out["output_layer.weight"] = padded(get("lm_head.weight"))
    return out


def expected_tensors(config, hf, divisible_by=128):
    """{DCP key: array in its stored dtype}: BF16 weights (= bf16 of the fp32 masters), fp32 state."""
    masters = megatron_layout(config, hf, ".master", divisible_by)
    # The weights the trainer uses are its masters.
    assert all(np.array_equal(a, b) for a, b in
               zip(megatron_layout(config, hf, "", divisible_by).values(), masters.values()))
    out = {k: v.astype(ml_dtypes.bfloat16) for k, v in masters.items()}
    for fam, suffix in (("fp32_param", ".master"), ("exp_avg", ".exp_avg"), ("exp_avg_sq", ".exp_avg_sq")):
        for k, v in megatron_layout(config, hf, suffix, divisible_by).items():
            out[f"optimizer.state.{fam}.{k}"] = v
    return out


# ---- reading a checkpoint ---------------------------------------------------------------------
def read_tensor_archive(blob):
    """The tensor of one torch.save archive, checking its records, CRCs and alignment."""
    z = zipfile.ZipFile(io.BytesIO(blob))
    assert z.testzip() is None
    names = z.namelist()
    assert names == ["archive/data.pkl", "archive/byteorder", "archive/data/0", "archive/version"]
    assert z.read("archive/byteorder") == b"little" and z.read("archive/version") == b"3\n"
    info = z.getinfo("archive/data/0")
    name_len, extra_len = struct.unpack("<HH", blob[info.header_offset + 26:info.header_offset + 30])
    data_at = info.header_offset + 30 + name_len + extra_len
    assert data_at % 64 == 0, "tensor data not 64-byte aligned"
    t = unpickle(z.read("archive/data.pkl"))
    assert isinstance(t, TensorRef) and t.offset == 0 and t.requires_grad is False
    dtype = {cls: np_t for np_t, cls in DTYPES.values()}[t.storage.cls]
    size = tuple(t.size)
    strides = tuple(int(np.prod(size[i + 1:])) for i in range(len(size)))
    assert tuple(t.stride) == strides and t.storage.numel == int(np.prod(size))
    raw = blob[data_at:data_at + info.file_size]
    assert raw == z.read("archive/data/0")
    return np.frombuffer(raw, dtype=dtype).reshape(size)


def read_checkpoint(it_dir):
    """(common dict, Metadata record, {key: global array}) of one iteration folder."""
    assert sorted(os.listdir(it_dir)) == [".metadata", "__0_0.distcp", "common.pt", "metadata.json"]
    meta_json = json.loads((it_dir / "metadata.json").read_text())
    assert meta_json == METADATA_JSON and list(meta_json) == list(METADATA_JSON)

    z = zipfile.ZipFile(it_dir / "common.pt")
    assert z.testzip() is None
    assert z.namelist() == ["archive/data.pkl", "archive/byteorder", "archive/version"]
    common = unpickle(z.read("archive/data.pkl"))

    md = unpickle((it_dir / ".metadata").read_bytes())
    assert md.kind == "Metadata" and md.version == "1.0.0" and md.planner_data == {}
    assert md.storage_meta.kind == "StorageMeta" and md.storage_meta.modules == []
    assert isinstance(md.storage_meta.save_id, str) and md.storage_meta.checkpoint_id is None

    storage = {}
    for index, info in md.storage_data.items():
        assert index.kind == "MetadataIndex" and info.kind == "_StorageInfo"
        assert isinstance(index.offset, TorchSize)
        assert info.relative_path == "__0_0.distcp" and not hasattr(info, "transform_descriptors")
        storage[(index.fqn, tuple(index.offset))] = (index.index, info.offset, info.length)
    blob = (it_dir / "__0_0.distcp").read_bytes()
    # Items lie back to back and fill the file.
    spans = sorted((o, l) for _, o, l in storage.values())
    assert spans[0][0] == 0 and all(a + la == b for (a, la), (b, _) in zip(spans, spans[1:]))
    assert spans[-1][0] + spans[-1][1] == len(blob)

    tensors = {}
    for key, tm in md.state_dict_metadata.items():
        assert tm.kind == "TensorStorageMetadata" and isinstance(tm.size, TorchSize)
        p = tm.properties
        assert isinstance(p, TensorProperties) and p.layout.name == "strided"
        assert p.memory_format.name == "contiguous_format" and not p.requires_grad and not p.pin_memory
        np_dtype = DTYPES[p.dtype.name][0]
        full = np.full(tuple(tm.size), np.nan, dtype=np.float32)
        covered = 0
        for i, ch in enumerate(tm.chunks):
            assert ch.kind == "ChunkStorageMetadata"
            idx, off, length = storage.pop((key, tuple(ch.offsets)))
            assert idx == i
            arr = read_tensor_archive(blob[off:off + length])
            assert arr.dtype == np_dtype and arr.shape == tuple(ch.sizes)
            box = tuple(slice(o, o + s) for o, s in zip(ch.offsets, ch.sizes))
            assert np.isnan(full[box]).all(), f"{key}: chunks overlap"
            full[box] = arr.astype(np.float32)
            covered += arr.size
        assert covered == full.size, f"{key}: chunks do not cover the tensor"
        tensors[key] = full.astype(np_dtype)
    assert not storage, f"storage entries without a chunk: {list(storage)[:3]}"
    return common, md, tensors


def bits(a):
    a = np.ascontiguousarray(a)
    return a.view(np.uint16 if a.dtype == ml_dtypes.bfloat16 else np.uint32)


# ---- tests -------------------------------------------------------------------------------------
@pytest.mark.parametrize("config,extra", [
    (QWEN3, []),
    # Tiny chunks split every tensor along its rows; no vocabulary padding.
    (QWEN2_TIED, ["--max-chunk-bytes", "100", "--make-vocab-size-divisible-by", "1"]),
])
def test_layout_and_values(tmp_path, config, extra):
    _, losses = probe(tmp_path, config, "--steps", 2, "--save", tmp_path / "ck",
                      "--dump", tmp_path / "dump.safetensors", *extra)
    assert len(losses) == 2
    assert (tmp_path / "ck/latest_checkpointed_iteration.txt").read_text() == "2"
    assert sorted(os.listdir(tmp_path / "ck")) == ["iter_0000002", "latest_checkpointed_iteration.txt"]
    common, md, tensors = read_checkpoint(tmp_path / "ck/iter_0000002")

    divisible_by = 1 if "1" in extra else 128
    V, L = config["vocab_size"], config["num_hidden_layers"]
    Vp = -(-V // divisible_by) * divisible_by
    assert list(common) == ["args", "checkpoint_version", "iteration", "optimizer",
                            "opt_param_scheduler", "num_floating_point_operations_so_far"]
    assert common["checkpoint_version"] == 3.0 and common["iteration"] == 2
    a = common["args"]
    assert isinstance(a, argparse.Namespace)
    # What slime's convert_torch_dist_to_hf.py and its qwen2 converter read.
    assert (a.num_layers, a.hidden_size, a.num_attention_heads) == (L, 32, 4)
    assert (a.num_query_groups, a.kv_channels, a.q_lora_rank) == (2, 8, None)
    assert (a.vocab_size, a.padded_vocab_size, a.ffn_hidden_size) == (V, Vp, 48)
    assert a.untie_embeddings_and_output_weights == (not config["tie_word_embeddings"])
    assert a.add_qkv_bias == (config["model_type"] == "qwen2")
    assert a.qk_layernorm == (config["model_type"] == "qwen3")
    assert a.params_dtype.name == "bfloat16" and a.normalization == "RMSNorm" and a.swiglu
    assert a.tensor_model_parallel_size == 1 and a.pipeline_model_parallel_size == 1
    assert a.rotary_base == 10000 and isinstance(a.rotary_base, int) and a.ckpt_format == "torch_dist"
    groups = common["optimizer"]["optimizer"]["param_groups"]
    assert [g["step"] for g in groups] == [2, 2] and groups[0]["betas"] == (0.9, 0.999)
    assert common["opt_param_scheduler"]["num_steps"] == 2

    hf = load_file(str(tmp_path / "dump.safetensors"))
    expected = expected_tensors(config, hf, divisible_by)
    assert list(tensors) == list(expected)
    for key, want in expected.items():
        got = tensors[key]
        assert got.dtype == want.dtype and got.shape == want.shape, key
        assert np.array_equal(bits(got), bits(want)), f"{key} differs"
        assert np.array_equal(bits(got), bits(hf["dcp/" + key])), f"{key} differs from the dump"
    # Layer-stacked keys hold one chunk per layer (or more when split), others start at row 0.
    for key, tm in md.state_dict_metadata.items():
        if ".layers." in key:
            assert {c.offsets[0] for c in tm.chunks} == set(range(L))
            assert all(c.sizes[0] == 1 for c in tm.chunks)
    if extra:
        assert any(len(tm.chunks) > L for tm in md.state_dict_metadata.values())


def test_resume_is_bitwise(tmp_path):
    full, full_losses = probe(tmp_path, QWEN3, "--steps", 5, "--save", tmp_path / "a",
                              "--dump", tmp_path / "a.safetensors")
    probe(tmp_path, QWEN3, "--steps", 3, "--save", tmp_path / "b")
    # A new process: load iteration 3 (from the tracker), take 2 more steps, save iteration 5.
    _, resumed_losses = probe(tmp_path, QWEN3, "--load", tmp_path / "b", "--steps", 2,
                              "--save", tmp_path / "b", "--dump", tmp_path / "b.safetensors")
    assert resumed_losses == full_losses[3:]  # every metric, to the last bit (%.17g)
    a, b = load_file(str(tmp_path / "a.safetensors")), load_file(str(tmp_path / "b.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(bits(a[k]) if a[k].dtype != np.float32 else a[k].view(np.uint32),
                              bits(b[k]) if b[k].dtype != np.float32 else b[k].view(np.uint32)), k
    assert (tmp_path / "b/latest_checkpointed_iteration.txt").read_text() == "5"
    assert (tmp_path / "b/iter_0000003").is_dir()
    for name in ("__0_0.distcp", "common.pt", "metadata.json"):
        assert (tmp_path / "a/iter_0000005" / name).read_bytes() == \
               (tmp_path / "b/iter_0000005" / name).read_bytes(), name

    # The comparison can fail: 2 steps from the initial weights give other losses.
    _, fresh = probe(tmp_path, QWEN3, "--steps", 2)
    assert fresh != full_losses[3:]


def test_load_rejects_damage_and_other_models(tmp_path):
    probe(tmp_path, QWEN3, "--steps", 1, "--save", tmp_path / "ck")
    distcp = tmp_path / "ck/iter_0000001/__0_0.distcp"
    good = distcp.read_bytes()

    other = dict(QWEN3, hidden_size=48)
    p, _ = probe(tmp_path, other, "--load", tmp_path / "ck", check=False)
    assert p.returncode == 1 and "INVALID_ARGUMENT" in p.stderr and "hidden_size" in p.stderr

    # A flipped bit inside one chunk's tensor data: the zip CRC32 names file and tensor.
    md = unpickle((tmp_path / "ck/iter_0000001/.metadata").read_bytes())
    key = "optimizer.state.exp_avg_sq.output_layer.weight"
    (item,) = [i for x, i in md.storage_data.items() if x.fqn == key]
    z = zipfile.ZipFile(io.BytesIO(good[item.offset:item.offset + item.length]))
    damaged = bytearray(good)
    damaged[item.offset + z.getinfo("archive/data/0").header_offset + 200] ^= 0x10
    distcp.write_bytes(bytes(damaged))
    p, _ = probe(tmp_path, QWEN3, "--load", tmp_path / "ck", check=False)
    assert p.returncode == 1 and "DATA_LOSS" in p.stderr and "CRC32" in p.stderr
    assert "__0_0.distcp" in p.stderr and key in p.stderr

    distcp.write_bytes(good[: len(good) // 2])
    p, _ = probe(tmp_path, QWEN3, "--load", tmp_path / "ck", check=False)
    assert p.returncode == 1 and "DATA_LOSS" in p.stderr and "truncated" in p.stderr

    distcp.write_bytes(good)
    p, _ = probe(tmp_path, QWEN3, "--load", tmp_path / "ck", "--steps", 1)
    assert p.returncode == 0


def test_random_damage_is_refused_cleanly(tmp_path):
    """Random bit flips and truncations of the pickled files: a clean error (or a load that still
    checks out, when the flip hits a byte nothing reads), never a crash."""
    probe(tmp_path, QWEN3, "--steps", 1, "--save", tmp_path / "ck")
    it = tmp_path / "ck/iter_0000001"
    rng = np.random.default_rng(0)
    outcomes = collections.Counter()
    for name in (".metadata", "common.pt"):
        good = (it / name).read_bytes()
        for trial in range(30):
            bad = bytearray(good)
            if trial % 3 == 2:
                bad = bad[:int(rng.integers(0, len(good)))]
            else:
                bad[int(rng.integers(0, len(good)))] ^= 1 << int(rng.integers(0, 8))
            (it / name).write_bytes(bytes(bad))
            p, _ = probe(tmp_path, QWEN3, "--load", tmp_path / "ck", check=False)
            assert p.returncode in (0, 1), (name, trial, p.returncode, p.stderr)
            if p.returncode == 1:
                assert any(c in p.stderr for c in ("DATA_LOSS", "INVALID_ARGUMENT", "UNIMPLEMENTED")), p.stderr
            outcomes[p.returncode] += 1
        (it / name).write_bytes(good)
    assert outcomes[1] > 30  # most damage is detected (common.pt by its CRC32)
