"""fp8rl's RL policy loss (trainer/losses.h) against a NumPy reference of slime's formulas.

The reference below is written from slime's compute_policy_loss, vanilla_tis_function,
compute_approx_kl and sum_of_sample_mean (reference/slime.md §5.4), in float64; its gradients are
central differences of the reference loss, so neither side borrows the other's derivative. The
library is reached through the C ABI of trainer/tools/trainer_capi.cc, whose path arrives in
FP8RL_TRAINER_CAPI.
"""

import ctypes
import os

import numpy as np
import pytest

if "FP8RL_TRAINER_CAPI" not in os.environ:
    pytest.skip("FP8RL_TRAINER_CAPI is not set (run through ctest)", allow_module_level=True)
LIB = ctypes.CDLL(os.environ["FP8RL_TRAINER_CAPI"])
KL_TYPES = {"k1": 0, "k2": 1, "k3": 2, "low_var_kl": 3}
INVALID_ARGUMENT = 3  # absl::StatusCode::kInvalidArgument


class LossConfig(ctypes.Structure):
    _fields_ = [("eps_clip", ctypes.c_double), ("eps_clip_high", ctypes.c_double),
                ("eps_clip_c", ctypes.c_double), ("use_tis", ctypes.c_int32),
                ("tis_clip_low", ctypes.c_double), ("tis_clip", ctypes.c_double),
                ("use_kl_loss", ctypes.c_int32), ("kl_loss_coef", ctypes.c_double),
                ("kl_loss_type", ctypes.c_int32), ("entropy_coef", ctypes.c_double),
                ("token_mean", ctypes.c_int32)]


P, I64 = ctypes.c_void_p, ctypes.c_int64
LIB.fp8rl_policy_loss.argtypes = [ctypes.POINTER(LossConfig), I64, P, P, P, P, P, P, P, I64, P,
                                  ctypes.POINTER(ctypes.c_double), P, P, ctypes.c_char_p, I64,
                                  ctypes.c_char_p, I64]
LIB.fp8rl_policy_loss.restype = ctypes.c_int

DEFAULTS = dict(eps_clip=0.2, eps_clip_high=None, eps_clip_c=None, use_tis=False,
                tis_clip_low=0.0, tis_clip=2.0, use_kl_loss=False, kl_loss_coef=0.0,
                kl_loss_type="k1", entropy_coef=0.0, token_mean=False)


def ptr(a):
    return None if a is None else a.ctypes.data_as(ctypes.c_void_p)


def fp8rl_loss(cfg, d):
    """Runs the C ABI; returns (status code, loss, dlogp, dentropy, metrics dict, message)."""
    unset = lambda v: np.nan if v is None else v
    c = LossConfig(cfg["eps_clip"], unset(cfg["eps_clip_high"]), unset(cfg["eps_clip_c"]),
                   int(cfg["use_tis"]),
                   cfg["tis_clip_low"], cfg["tis_clip"], int(cfg["use_kl_loss"]),
                   cfg["kl_loss_coef"], KL_TYPES[cfg["kl_loss_type"]], cfg["entropy_coef"],
                   int(cfg["token_mean"]))
    n = len(d["logp"])
    f32 = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in d.items() if k != "offsets"}
    offsets = np.ascontiguousarray(d["offsets"], dtype=np.int64)
    loss = ctypes.c_double()
    dlogp, dent = np.zeros(n, np.float32), np.zeros(n, np.float32)
    metrics, err = ctypes.create_string_buffer(4096), ctypes.create_string_buffer(1024)
    rc = LIB.fp8rl_policy_loss(ctypes.byref(c), n, ptr(f32["logp"]), ptr(f32["entropy"]),
                               ptr(f32["old"]), ptr(f32["adv"]), ptr(f32["mask"]),
                               ptr(f32.get("rollout")), ptr(f32.get("ref")), len(offsets) - 1,
                               ptr(offsets), ctypes.byref(loss), ptr(dlogp), ptr(dent), metrics,
                               len(metrics), err, len(err))
    parsed = dict(line.split("=") for line in metrics.value.decode().splitlines())
    return rc, loss.value, dlogp, dent, {k: float(v) for k, v in parsed.items()}, err.value.decode()


def reference(cfg, d, logp=None, entropy=None):
    """slime's loss and metrics in float64 (logp / entropy override d's for differencing)."""
    f = {k: np.asarray(v, np.float64) for k, v in d.items() if k != "offsets"}
    logp = f["logp"] if logp is None else logp
    entropy = f["entropy"] if entropy is None else entropy
    old, adv, mask, off = f["old"], f["adv"], f["mask"], d["offsets"]
    n_samples = len(off) - 1

    def reduce(x):  # slime's sum_of_sample_mean, or the token mean
        if cfg["token_mean"]:
            return float(np.sum(x * mask) / max(np.sum(mask), 1.0))
        return sum(float(np.sum(x[a:b] * mask[a:b]) / max(np.sum(mask[a:b]), 1.0))
                   for a, b in zip(off[:-1], off[1:])) / n_samples

    ppo_kl = old - logp
    ratio = np.exp(-ppo_kl)
    hi = cfg["eps_clip"] if cfg["eps_clip_high"] is None else cfg["eps_clip_high"]
    pg1 = -ratio * adv
    pg2 = -np.clip(ratio, 1 - cfg["eps_clip"], 1 + hi) * adv
    pg = np.maximum(pg1, pg2)
    clipfrac = (pg2 > pg1).astype(np.float64)
    if cfg["eps_clip_c"] is not None:
        pg = np.where(adv < 0, np.minimum(-cfg["eps_clip_c"] * adv, pg), pg)
    m = {}
    if "rollout" in f:
        m["train_rollout_logprob_abs_diff"] = reduce(np.abs(old - f["rollout"]))
    if cfg["use_tis"]:
        tis = np.exp(old - f["rollout"])
        w = np.clip(tis, cfg["tis_clip_low"], cfg["tis_clip"])
        pg = pg * w
        m.update(tis=reduce(tis), tis_clipfrac=reduce((w != tis).astype(np.float64)),
                 tis_abs=reduce(np.abs(tis - 1)))
    m.update(pg_loss=reduce(pg), pg_clipfrac=reduce(clipfrac), ppo_kl=reduce(ppo_kl),
             entropy_loss=reduce(entropy))
    loss = m["pg_loss"] - cfg["entropy_coef"] * m["entropy_loss"]
    if cfg["use_kl_loss"]:
        x = logp - f["ref"]
        kl = {"k1": x, "k2": x * x / 2, "k3": np.exp(-x) - 1 + x,
              "low_var_kl": np.clip(np.exp(-x) - 1 + x, -10, 10)}[cfg["kl_loss_type"]]
        m["kl_loss"] = reduce(kl)
        loss += cfg["kl_loss_coef"] * m["kl_loss"]
    m["loss"] = loss
    return m


def numeric_grad(cfg, d, key, h=1e-6):
    base = np.asarray(d[key], np.float64)
    g = np.zeros_like(base)
    for i in range(len(base)):
        up, down = base.copy(), base.copy()
        up[i] += h
        down[i] -= h
        g[i] = (reference(cfg, d, **{key: up})["loss"] -
                reference(cfg, d, **{key: down})["loss"]) / (2 * h)
    return g


def make_data(seed, samples=5, with_ref=True):
    rng = np.random.default_rng(seed)
    lens = rng.integers(1, 7, size=samples)
    n = int(lens.sum())
    old = (-0.2 - 3 * rng.random(n)).astype(np.float32)
    d = dict(old=old, logp=(old + 0.6 * rng.standard_normal(n)).astype(np.float32),
             rollout=(old + 0.5 * rng.standard_normal(n)).astype(np.float32),
             entropy=(2 * rng.random(n)).astype(np.float32),
             adv=rng.standard_normal(n).astype(np.float32),
             mask=(rng.random(n) < 0.8).astype(np.float32),
             offsets=np.concatenate([[0], np.cumsum(lens)]).astype(np.int64))
    if with_ref:
        d["ref"] = (old + 0.5 * rng.standard_normal(n)).astype(np.float32)
    d["mask"][d["offsets"][1] - 1] = 0  # the first sample always has a masked-out token
    return d


CASES = {
    "ppo_clip": {},
    "asymmetric_dual_clip": dict(eps_clip_high=0.28, eps_clip_c=1.5),
    "tis": dict(use_tis=True),
    "tis_clip_low": dict(use_tis=True, tis_clip_low=0.5, tis_clip=1.5),
    "kl_k1": dict(use_kl_loss=True, kl_loss_coef=0.3, kl_loss_type="k1"),
    "kl_k2": dict(use_kl_loss=True, kl_loss_coef=0.3, kl_loss_type="k2"),
    "kl_k3": dict(use_kl_loss=True, kl_loss_coef=0.3, kl_loss_type="k3"),
    "kl_low_var": dict(use_kl_loss=True, kl_loss_coef=0.3, kl_loss_type="low_var_kl"),
    "entropy": dict(entropy_coef=0.05),
    "token_mean_all_terms": dict(token_mean=True, use_tis=True, use_kl_loss=True,
                                 kl_loss_coef=0.1, kl_loss_type="low_var_kl", entropy_coef=0.01),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("seed", [0, 1])
def test_loss_and_gradients_match_numpy(name, seed):
    cfg = {**DEFAULTS, **CASES[name]}
    d = make_data(seed)
    rc, loss, dlogp, dent, metrics, msg = fp8rl_loss(cfg, d)
    assert rc == 0, msg
    ref = reference(cfg, d)
    assert set(metrics) == set(ref)
    for k, v in ref.items():
        assert metrics[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
    assert loss == pytest.approx(ref["loss"], rel=1e-9, abs=1e-12)
    for key, got in (("logp", dlogp), ("entropy", dent)):
        want = numeric_grad(cfg, d, key)
        scale = max(np.abs(want).max(), 1e-3)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * scale, err_msg=key)


def test_low_var_kl_clamp_and_masked_tokens():
    cfg = {**DEFAULTS, "use_kl_loss": True, "kl_loss_coef": 1.0, "kl_loss_type": "low_var_kl"}
    d = make_data(3, samples=2)
    d["ref"][0] = d["logp"][0] + 15  # k3 = e^15 - 16, clamped to 10: no gradient
    d["mask"][0] = 1
    rc, _, dlogp, _, metrics, msg = fp8rl_loss(cfg, d)
    assert rc == 0, msg
    assert metrics["kl_loss"] == pytest.approx(reference(cfg, d)["kl_loss"], rel=1e-9)
    masked = d["mask"] == 0
    assert np.all(dlogp[masked] == 0)


def test_bad_inputs_are_rejected():
    d = make_data(4)
    cfg = {**DEFAULTS, "use_tis": True}
    del d["rollout"]
    rc, *_, msg = fp8rl_loss(cfg, d)
    assert rc == INVALID_ARGUMENT and "rollout_log_probs" in msg
    rc, *_, msg = fp8rl_loss({**DEFAULTS, "eps_clip_c": 0.5}, make_data(4))
    assert rc == INVALID_ARGUMENT and "eps_clip_c" in msg
