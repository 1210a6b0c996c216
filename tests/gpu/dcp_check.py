#!/usr/bin/env python3
"""PyTorch reads fp8rl's Megatron torch_dist checkpoints (trainer/checkpoint.h), and fp8rl reads
PyTorch's. Run on the GPU machine (PyTorch there; no GPU needed).

usage: dcp_check.py ITER_DIR DUMP.safetensors          check one checkpoint
       dcp_check.py --probe fp8rl_ckpt_probe [--work DIR] [--json OUT.json]
                                                      make checkpoints with the probe, check them,
                                                      and load a torch-written copy with fp8rl
For a checkpoint folder and the probe's dump of what fp8rl holds ("dcp/<key>": every tensor the
checkpoint should hold, whole): torch.load(common.pt) (weights_only=False as slime does, and
weights_only=True with argparse.Namespace allowed as Megatron does); dcp.load into a state dict
built from the metadata; dcp_to_torch_save; slime's converter path (plain-pickle metadata,
_load_state_dict with a planner filling every non-optimizer key, no_dist). Every tensor must be
bitwise equal to the dump. With --probe, the state dict is also re-saved by dcp.save (PyTorch's
own writer) next to the same common.pt, and the probe loads that copy: what it then holds must be
bitwise equal too. Prints one verdict line; exits 1 on any mismatch or error.
"""
import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import traceback

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
from safetensors.torch import load_file

CONFIGS = {
    "qwen3": dict(model_type="qwen3", vocab_size=50, hidden_size=32, intermediate_size=48,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                  max_position_embeddings=64, rms_norm_eps=1e-6, rope_theta=1000000.0,
                  tie_word_embeddings=False, torch_dtype="float32"),
    "qwen2-tied": dict(model_type="qwen2", vocab_size=61, hidden_size=32, intermediate_size=40,
                       num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=64, rms_norm_eps=1e-6, rope_theta=10000.0,
                       tie_word_embeddings=True, torch_dtype="float32"),
}


def bits(t):
    t = t.contiguous()
    return t.view(torch.int16) if t.element_size() == 2 else t.view(torch.int32)


def same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(bits(a), bits(b))


def compare(what, got, want, keys=None):
    """Mismatch descriptions between two {key: tensor} dicts over `keys` (default: want's)."""
    keys = list(want) if keys is None else keys
    errors = [f"{what}: missing {k}" for k in keys if k not in got]
    errors += [f"{what}: {k} differs ({got[k].dtype}{list(got[k].shape)} vs "
               f"{want[k].dtype}{list(want[k].shape)})"
               for k in keys if k in got and not same(got[k], want[k])]
    return errors


class PlainPickleReader(dcp.FileSystemReader):
    """slime's WrappedStorageReader: the metadata through a plain (subclassable) Unpickler."""

    def read_metadata(self, *args, **kwargs):
        with open(os.path.join(self.path, ".metadata"), "rb") as f:
            md = pickle.Unpickler(f).load()
        if md.planner_data is None:
            md.planner_data = {}
        md.storage_meta.load_id = self.load_id
        return md


class NonOptimizerPlanner(DefaultLoadPlanner):
    """slime's EmptyStateDictLoadPlanner: every key without 'optimizer' or '_state'."""

    def set_up_planner(self, state_dict, metadata=None, is_coordinator=False):
        for k, v in metadata.state_dict_metadata.items():
            if "optimizer" in k or "_state" in k:
                continue
            if isinstance(v, TensorStorageMetadata):
                v = torch.empty(v.size, dtype=v.properties.dtype)
            state_dict[k] = v
        super().set_up_planner(state_dict, metadata, is_coordinator)


def check_checkpoint(it_dir, dump_path, work):
    """Returns (errors, number of tensors, the state dict dcp.load filled)."""
    errors = []
    dump = load_file(dump_path)
    want = {k[len("dcp/"):]: v for k, v in dump.items() if k.startswith("dcp/")}

    common = torch.load(os.path.join(it_dir, "common.pt"), weights_only=False)
    torch.serialization.add_safe_globals([argparse.Namespace])
    common_safe = torch.load(os.path.join(it_dir, "common.pt"), weights_only=True)
    a = common["args"]
    if vars(a) != vars(common_safe["args"]) or common["iteration"] != common_safe["iteration"]:
        errors.append("common.pt: weights_only=True reads other values")
    for field in ("num_layers", "vocab_size", "q_lora_rank", "hidden_size", "num_attention_heads",
                  "num_query_groups", "kv_channels"):
        if not hasattr(a, field):
            errors.append(f"common.pt: args has no {field}")
    if common["checkpoint_version"] != 3.0 or a.params_dtype is not torch.bfloat16:
        errors.append("common.pt: checkpoint_version or params_dtype")

    reader = dcp.FileSystemReader(it_dir)
    md = reader.read_metadata()
    keys = [k for k, v in md.state_dict_metadata.items() if isinstance(v, TensorStorageMetadata)]
    if sorted(keys) != sorted(want):
        errors.append(f".metadata keys differ from the dump: {sorted(set(keys) ^ set(want))[:5]}")
    sd = {k: torch.empty(md.state_dict_metadata[k].size,
                         dtype=md.state_dict_metadata[k].properties.dtype) for k in keys}
    dcp.load(sd, storage_reader=dcp.FileSystemReader(it_dir))
    errors += compare("dcp.load", sd, want)

    out = os.path.join(work, "torch_save.pt")
    dcp_to_torch_save(it_dir, out)
    errors += compare("dcp_to_torch_save", torch.load(out, weights_only=False), want)

    slime_sd = {}
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict
    _load_state_dict(slime_sd, storage_reader=PlainPickleReader(it_dir),
                     planner=NonOptimizerPlanner(), no_dist=True)
    model_keys = [k for k in want if "optimizer" not in k]
    errors += compare("slime reader", slime_sd, want, model_keys)
    if len(slime_sd) != len(model_keys):
        errors.append(f"slime reader: {len(slime_sd)} keys, expected {len(model_keys)}")
    return errors, len(keys), sd


def run_probe(probe, *args):
    p = subprocess.run([probe, *map(str, args)], capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise RuntimeError(f"probe {args} failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


def torch_written_copy(it_dir, sd, dest_root, iteration):
    """The same checkpoint written by PyTorch's dcp.save (whole tensors, its own archives and
    pickle), with fp8rl's common.pt and metadata.json and a tracker."""
    dest = os.path.join(dest_root, f"iter_{iteration:07d}")
    dcp.save(sd, storage_writer=dcp.FileSystemWriter(dest))
    for name in ("common.pt", "metadata.json"):
        shutil.copy(os.path.join(it_dir, name), dest)
    with open(os.path.join(dest_root, "latest_checkpointed_iteration.txt"), "w") as f:
        f.write(str(iteration))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("iter_dir", nargs="?")
    ap.add_argument("dump", nargs="?")
    ap.add_argument("--probe")
    ap.add_argument("--work")
    ap.add_argument("--json")
    o = ap.parse_args()
    if not (o.probe or (o.iter_dir and o.dump)):
        ap.error("give ITER_DIR DUMP or --probe")
    work = o.work or tempfile.mkdtemp(prefix="fp8rl_dcp_")
    os.makedirs(work, exist_ok=True)
    report = {"torch": torch.__version__, "cases": []}
    errors = []
    try:
        if not o.probe:
            errs, n, _ = check_checkpoint(o.iter_dir, o.dump, work)
            errors += errs
            report["cases"].append({"name": o.iter_dir, "tensors": n, "errors": errs})
        for name, config in ([] if not o.probe else CONFIGS.items()):
            for chunking in ("layers", "small"):
                case = os.path.join(work, f"{name}-{chunking}")
                shutil.rmtree(case, ignore_errors=True)
                os.makedirs(case)
                cfg = os.path.join(case, "config.json")
                with open(cfg, "w") as f:
                    json.dump(config, f)
                extra = ["--max-chunk-bytes", "512"] if chunking == "small" else []
                run_probe(o.probe, "--config", cfg, "--steps", 3, "--save", f"{case}/ck",
                          "--dump", f"{case}/dump.safetensors", *extra)
                errs, n, sd = check_checkpoint(f"{case}/ck/iter_0000003", f"{case}/dump.safetensors", case)
                # fp8rl loads what PyTorch wrote and then holds exactly the same state.
                torch_written_copy(f"{case}/ck/iter_0000003", sd, f"{case}/native", 3)
                run_probe(o.probe, "--config", cfg, "--load", f"{case}/native",
                          "--dump", f"{case}/native.safetensors", *extra)
                a, b = load_file(f"{case}/dump.safetensors"), load_file(f"{case}/native.safetensors")
                errs += compare("fp8rl load of dcp.save output", b, a)
                errors += [f"{name}-{chunking}: {e}" for e in errs]
                report["cases"].append({"name": f"{name}-{chunking}", "tensors": n, "errors": errs})
    except Exception as e:  # a reader refusing the files is a failure to report, not a crash
        errors.append(f"{type(e).__name__}: {e}")
        traceback.print_exc()
    report["errors"] = errors
    if o.json:
        with open(o.json, "w") as f:
            json.dump(report, f, indent=1)
    tensors = sum(c["tensors"] for c in report["cases"])
    if errors:
        print(f"dcp_check: FAIL ({len(errors)} problems; first: {errors[0]}) torch {torch.__version__}")
        for e in errors[:20]:
            print("  ", e)
        return 1
    print(f"dcp_check: PASS torch {torch.__version__}: {len(report['cases'])} checkpoints, "
          f"{tensors} tensors bitwise equal via dcp.load, dcp_to_torch_save and slime's reader; "
          f"common.pt loads (weights_only=True with Namespace)"
          + ("; fp8rl loads dcp.save's copy bitwise" if o.probe else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
