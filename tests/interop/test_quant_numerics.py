"""fp8rl's quant/ CPU reference against an independent NumPy + ml_dtypes implementation.

Everything on the reference side is computed here from the rules in ARCHITECTURE.md's numerics
contract (never by the code under test): E4M3 is ml_dtypes.float8_e4m3fn after clipping to
+-448, E8M0 is ml_dtypes.float8_e8m0fnu, scales follow TransformerEngine's
compute_scale_from_amax in float32, tile amax is np.max of |x| (NaN-propagating, the rule stated
in quant/block_quant.h), INT4 follows quant/int4.h. The library is reached through the C ABI of
tests/interop/quant_capi.cc, whose path arrives in FP8RL_QUANT_CAPI.
"""

import ctypes
import os

import ml_dtypes
import numpy as np
import pytest

F32 = np.float32
E4M3 = ml_dtypes.float8_e4m3fn
E8M0 = ml_dtypes.float8_e8m0fnu
BF16 = ml_dtypes.bfloat16
F32_MAX = F32(np.finfo(np.float32).max)
BF16_MAX = F32(ml_dtypes.finfo(BF16).max)
DT_F32, DT_BF16 = 0, 1  # fp8rl::DType values
INVALID_ARGUMENT = 3  # absl::StatusCode::kInvalidArgument

if "FP8RL_QUANT_CAPI" not in os.environ:
    pytest.skip("FP8RL_QUANT_CAPI is not set (run through ctest)", allow_module_level=True)
LIB = ctypes.CDLL(os.environ["FP8RL_QUANT_CAPI"])

P, I64, I32, FLT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float
ERR = [ctypes.c_char_p, I64]
SIGNATURES = {
    "fp8rl_f32_to_e4m3": [P, I64, P],
    "fp8rl_e4m3_to_f32": [P, I64, P],
    "fp8rl_f32_to_e8m0": [P, I64, P],
    "fp8rl_e8m0_to_f32": [P, I64, P],
    "fp8rl_quantize_1x128": [I64, I64, I32, I32, FLT, I32, I32, P, P, P, P, P] + ERR,
    "fp8rl_quantize_128x128": [I64, I64, I32, I32, FLT, I64, P, P, P] + ERR,
    "fp8rl_dequantize_1x128": [I64, I64, P, P, P, I32] + ERR,
    "fp8rl_dequantize_128x128": [I64, I64, I64, P, P, P, I32] + ERR,
    "fp8rl_int4_fake_quant": [I64, I64, I64, I32, P, P] + ERR,
    "fp8rl_int4_pack": [I64, I64, I64, I32, P, P, P] + ERR,
    "fp8rl_int4_unpack": [I64, I64, I64, P, P, P, I32] + ERR,
    "fp8rl_gemm_blockscaled": [I64, I64, I64, I32, I32, I64, I64, I32, I32, P, P, P, P, P] + ERR,
}
for _name, _args in SIGNATURES.items():
    getattr(LIB, _name).argtypes = _args
    getattr(LIB, _name).restype = ctypes.c_int


def ptr(a):
    return None if a is None else a.ctypes.data_as(ctypes.c_void_p)


def call(name, *args):
    """Calls a status-returning function; returns (code, message)."""
    err = ctypes.create_string_buffer(1024)
    conv = [ptr(a) if isinstance(a, np.ndarray) or a is None else a for a in args]
    rc = getattr(LIB, name)(*conv, err, len(err))
    return rc, err.value.decode()


def check_call(name, *args):
    rc, msg = call(name, *args)
    assert rc == 0, f"{name}: {msg}"


def assert_bitwise(got, want, what):
    """Bitwise equality of two arrays of one dtype; reports the first differing coordinate."""
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype.itemsize == want.dtype.itemsize, f"{what}: {got.dtype} vs {want.dtype}"
    g = np.ascontiguousarray(got).view(np.uint8).reshape(got.shape + (got.dtype.itemsize,))
    w = np.ascontiguousarray(want).view(np.uint8).reshape(want.shape + (want.dtype.itemsize,))
    diff = np.argwhere((g != w).any(axis=-1))
    if diff.size:
        idx = tuple(diff[0])
        raise AssertionError(
            f"{what}: {len(diff)} elements differ; first at {idx}: got {got[idx]!r} "
            f"({g[idx].tobytes().hex()}), want {want[idx]!r} ({w[idx].tobytes().hex()})"
        )


# ------------------------------------------------------------------------------------------------
# The independent reference.


def ref_e4m3(x):
    """float32 -> E4M3 bits: saturate to +-448 (CUDA SATFINITE), then ml_dtypes' RNE cast."""
    with np.errstate(invalid="ignore"):  # NaN casts to NaN, as wanted
        return np.clip(x.astype(F32), -448, 448).astype(E4M3).view(np.uint8)


def ref_scale(amax, pow2, eps, value_for_inf):
    """TransformerEngine's compute_scale_from_amax, elementwise, in float32."""
    amax = np.asarray(amax, dtype=F32)
    with np.errstate(all="ignore"):
        amax = np.where(amax < F32(eps), F32(eps), amax).astype(F32)
        scale = (F32(448) / amax).astype(F32)
        scale = np.where(np.isinf(scale), F32(value_for_inf), scale).astype(F32)
        if pow2:
            scale = (scale.view(np.uint32) & np.uint32(0xFF800000)).view(F32)
        scale = np.where(np.isnan(amax) | np.isinf(amax) | (amax == 0), F32(1), scale)
    return scale.astype(F32)


def ref_quant(x, tile_rows, tile_cols, pow2, eps, value_for_inf):
    """Quantizes x [R, C] in tiles; returns (q [R, C] e4m3 bits, scale_inv grid [gr, gc])."""
    rows, cols = x.shape
    gr, gc = -(-rows // tile_rows), -(-cols // tile_cols)
    padded = np.zeros((gr * tile_rows, gc * tile_cols), F32)
    padded[:rows, :cols] = np.abs(x)
    amax = padded.reshape(gr, tile_rows, gc, tile_cols).max(axis=(1, 3))  # NaN propagates
    scale = ref_scale(amax, pow2, eps, value_for_inf)
    full = np.repeat(np.repeat(scale, tile_rows, axis=0), tile_cols, axis=1)[:rows, :cols]
    with np.errstate(all="ignore"):
        q = ref_e4m3((x * full).astype(F32))
        scale_inv = (F32(1) / scale).astype(F32)
    return q, scale_inv


def e4m3_values(q):
    return q.view(E4M3).astype(F32)


def ref_int4(x, group):
    """slime's symmetric INT4 grid with the scale rounded to bf16: (scale [R, G], level, y f32)."""
    rows, cols = x.shape
    groups = -(-cols // group)
    padded = np.zeros((rows, groups * group), F32)
    padded[:, :cols] = np.abs(x)
    amax = padded.reshape(rows, groups, group).max(axis=2)
    with np.errstate(all="ignore"):
        s = (amax / F32(7)).astype(F32)
        s = np.where(s < F32(1e-5), F32(1e-5), s).astype(F32)  # NaN stays NaN
        scale = s.astype(BF16).astype(F32)
        full = np.repeat(scale, group, axis=1)[:, :cols]
        level = np.clip(np.rint((x / full).astype(F32)), -7, 7).astype(F32)
        y = (level * full).astype(F32)
    return scale, level, y


# ------------------------------------------------------------------------------------------------
# Inputs.


def rand_matrix(rng, rows, cols, edges):
    """Normal values with magnitudes varying 10^+-3 across rows and 10^+-1 inside a row. `edges`
    adds an all-zero 128x128 block, values above 448, +-inf, +-NaN and a row of float32
    subnormals (448/amax overflows there, so value_for_inf is used)."""
    row_mag = 10.0 ** rng.uniform(-3, 3, size=(rows, 1))
    x = (rng.standard_normal((rows, cols)) * row_mag * 10.0 ** rng.uniform(-1, 1, (rows, cols)))
    x = x.astype(F32)
    if edges and x.size:
        x[:128, :128] = 0
        flat = x.reshape(-1)
        specials = [1000.0, -5e4, 1e30, np.inf, -np.inf, np.nan, -np.nan]
        for v in specials[: max(2, min(len(specials), x.size // 150))]:
            flat[rng.integers(x.size)] = v
        start = 0 if rows > 128 else 128
        x[-1, start:] = (F32(1e-40) * (np.arange(start, cols) % 7)).astype(F32)
    return x


def source(x, dtype):
    """(the buffer handed to C, its exact float32 values, value_for_inf)."""
    if dtype == DT_F32:
        return np.ascontiguousarray(x, F32), x.astype(F32), F32_MAX
    b = x.astype(BF16)
    return np.ascontiguousarray(b.view(np.uint16)), b.astype(F32), BF16_MAX


QUANT_SHAPES = [(1, 1), (1, 129), (3, 300), (130, 257), (256, 384), (0, 128), (128, 128), (5, 0)]
MODES = [(pow2, eps) for pow2 in (True, False) for eps in (0.0, 1e-12)]


# ------------------------------------------------------------------------------------------------
# Scalar codecs.


def encode_e4m3(x):
    x = np.ascontiguousarray(x, F32)
    out = np.empty(x.shape, np.uint8)
    LIB.fp8rl_f32_to_e4m3(ptr(x), x.size, ptr(out))
    return out


def encode_e8m0(x):
    x = np.ascontiguousarray(x, F32)
    out = np.empty(x.shape, np.uint8)
    LIB.fp8rl_f32_to_e8m0(ptr(x), x.size, ptr(out))
    return out


def e4m3_edges():
    codes = np.arange(0x7F, dtype=np.uint8)  # every finite positive code
    vals = codes.view(E4M3).astype(F32)
    mids = ((vals[:-1].astype(np.float64) + vals[1:]) / 2).astype(F32)  # exact
    near = np.concatenate([np.nextafter(mids, F32(0)), np.nextafter(mids, F32(np.inf))])
    sub = np.arange(8, dtype=F32) * F32(2.0**-9)
    specials = np.array([0, 448, 464, 465, 480, 449, 463.99, 1e30, np.inf, np.nan, 2.0**-10,
                         1e-45, F32_MAX], F32)
    pos = np.concatenate([vals, mids, near, sub, sub + F32(2.0**-10), specials])
    return np.concatenate([pos, -pos])


def test_e4m3_encode_every_bf16_pattern():
    x = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(BF16).astype(F32)
    assert_bitwise(encode_e4m3(x), ref_e4m3(x), "e4m3(bf16 patterns)")


def test_e4m3_encode_random_float32_and_edges():
    rng = np.random.default_rng(1)
    n = 1_000_000
    wide = (rng.choice([-1, 1], 400_000) * 2.0 ** rng.uniform(-30, 20, 400_000)).astype(F32)
    bits = rng.integers(0, 1 << 32, 200_000, dtype=np.uint64).astype(np.uint32).view(F32)
    # Values near tile maxima: x * scale for x close to its tile's amax, under both scale modes.
    amax = (2.0 ** rng.uniform(-40, 40, 200_000)).astype(F32)
    frac = (1 - rng.uniform(0, 1e-2, 200_000) * rng.integers(0, 2, 200_000)).astype(F32)
    near = np.concatenate([
        (amax * frac * ref_scale(amax, True, 0, F32_MAX)).astype(F32),
        (amax * frac * ref_scale(amax, False, 0, F32_MAX)).astype(F32),
    ])
    rest = n - wide.size - bits.size - near.size
    sat = (448 * (1 + rng.uniform(-0.1, 0.1, rest))).astype(F32)
    x = np.concatenate([wide, bits, near, sat, e4m3_edges()])
    assert x.size >= n
    assert_bitwise(encode_e4m3(x), ref_e4m3(x), "e4m3(random float32)")


def test_e4m3_decode_all_codes():
    codes = np.arange(256, dtype=np.uint8)
    got = np.empty(256, F32)
    LIB.fp8rl_e4m3_to_f32(ptr(codes), 256, ptr(got))
    want = codes.view(E4M3).astype(F32)
    finite = ~np.isnan(want)
    assert_bitwise(got[finite], want[finite], "e4m3 decode")
    assert np.isnan(got[~finite]).all() and list(codes[~finite]) == [0x7F, 0xFF]
    assert (np.signbit(got[~finite]) == [False, True]).all()


def test_e8m0_encode_matches_ml_dtypes():
    rng = np.random.default_rng(2)
    x = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(BF16).astype(F32)
    y = rng.integers(0, 1 << 32, 300_000, dtype=np.uint64).astype(np.uint32).view(F32)
    pow2 = (2.0 ** np.arange(-127, 128)).astype(F32)
    half_up = pow2 * F32(1.5)
    ties = np.concatenate([half_up, np.nextafter(half_up, F32(0)), pow2 * F32(0.75)])
    edges = np.array([0, -0.0, -1, np.inf, -np.inf, np.nan, 1e-45, 2.0**-127, 2.0**-128], F32)
    x = np.concatenate([x, y, pow2, ties.astype(F32), edges])
    subnormals = np.arange(1, 0x800000, 97, dtype=np.uint32).view(F32)  # every f32 subnormal range
    x = np.concatenate([x, subnormals])
    with np.errstate(all="ignore"):
        want = x.astype(E8M0).view(np.uint8)
    assert_bitwise(encode_e8m0(x), want, "e8m0 encode")


def test_e8m0_decode_all_codes():
    codes = np.arange(256, dtype=np.uint8)
    got = np.empty(256, F32)
    LIB.fp8rl_e8m0_to_f32(ptr(codes), 256, ptr(got))
    want = codes.view(E8M0).astype(F32)
    assert_bitwise(got[:255], want[:255], "e8m0 decode")
    assert np.isnan(got[255]) and np.isnan(want[255])


# ------------------------------------------------------------------------------------------------
# Block quantizers.


@pytest.mark.parametrize("dtype", [DT_F32, DT_BF16], ids=["f32", "bf16"])
@pytest.mark.parametrize("pow2,eps", MODES, ids=[f"pow2={p},eps={e}" for p, e in MODES])
def test_quantize_1x128_and_128x128_bitwise(dtype, pow2, eps):
    rng = np.random.default_rng(10 + dtype)
    for rows, cols in QUANT_SHAPES:
        what = f"{rows}x{cols} dtype={dtype} pow2={pow2} eps={eps}"
        buf, x, vfi = source(rand_matrix(rng, rows, cols, edges=True), dtype)
        lt = -(-cols // 128)
        q = np.zeros((rows, cols), np.uint8)
        s = np.zeros((lt, rows), F32)
        qt = np.zeros((cols, rows), np.uint8)
        st = np.zeros((-(-rows // 128), cols), F32)
        check_call("fp8rl_quantize_1x128", rows, cols, dtype, int(pow2), eps, 1, 1, buf, q, s, qt,
                   st)
        q_ref, s_ref = ref_quant(x, 1, 128, pow2, eps, vfi)
        assert_bitwise(q, q_ref, f"1x128 rowwise q {what}")
        assert_bitwise(s, np.ascontiguousarray(s_ref.T), f"1x128 rowwise scale_inv {what}")
        qc_ref, sc_ref = ref_quant(x, 128, 1, pow2, eps, vfi)
        assert_bitwise(qt, np.ascontiguousarray(qc_ref.T), f"1x128 columnwise q {what}")
        assert_bitwise(st, sc_ref, f"1x128 columnwise scale_inv {what}")

        # Dequantize the rowwise copy, as float32 and bfloat16.
        deq_ref = (e4m3_values(q_ref) * np.repeat(s_ref, 128, axis=1)[:, :cols]).astype(F32)
        out = np.zeros((rows, cols), F32)
        check_call("fp8rl_dequantize_1x128", rows, cols, q, s, out, DT_F32)
        assert_bitwise(out, deq_ref, f"dequantize_1x128 f32 {what}")
        out16 = np.zeros((rows, cols), np.uint16)
        check_call("fp8rl_dequantize_1x128", rows, cols, q, s, out16, DT_BF16)
        assert_bitwise(out16, deq_ref.astype(BF16).view(np.uint16), f"dequantize_1x128 bf16 {what}")

        ld = -(-lt // 4) * 4  # cuBLASLt's padded row stride
        q2 = np.zeros((rows, cols), np.uint8)
        s2 = np.full((-(-rows // 128), ld), -1, F32)
        check_call("fp8rl_quantize_128x128", rows, cols, dtype, int(pow2), eps, ld, buf, q2, s2)
        q2_ref, s2_ref = ref_quant(x, 128, 128, pow2, eps, vfi)
        assert_bitwise(q2, q2_ref, f"128x128 q {what}")
        assert_bitwise(np.ascontiguousarray(s2[:, :lt]), s2_ref, f"128x128 scale_inv {what}")
        assert (s2[:, lt:] == -1).all(), f"128x128 scale padding written {what}"
        full2 = np.repeat(np.repeat(s2_ref, 128, 0), 128, 1)[:rows, :cols]
        deq2_ref = (e4m3_values(q2_ref) * full2).astype(F32)
        out2 = np.zeros((rows, cols), F32)
        check_call("fp8rl_dequantize_128x128", rows, cols, ld, q2, s2, out2, DT_F32)
        assert_bitwise(out2, deq2_ref, f"dequantize_128x128 f32 {what}")


def test_quantize_tile_with_nan_is_unscaled():
    # The stated rule: a NaN anywhere in a tile makes its amax NaN, hence scale 1.
    x = np.full((1, 128), 3.0, F32)
    x[0, 7] = -np.nan
    q = np.zeros((1, 128), np.uint8)
    s = np.zeros((1, 1), F32)
    check_call("fp8rl_quantize_1x128", 1, 128, DT_F32, 1, 0.0, 1, 0, x, q, s, None, None)
    assert s[0, 0] == 1 and q[0, 7] == 0xFF and q[0, 0] == ref_e4m3(np.array([3.0], F32))[0]


def test_quantize_rejects_bad_descriptors():
    x = np.zeros((2, 4), F32)
    q = np.zeros((2, 4), np.uint8)
    s = np.zeros((1, 1), F32)
    rc, msg = call("fp8rl_quantize_128x128", 2, 4, DT_F32, 1, 0.0, 0, x, q, None)
    assert rc == INVALID_ARGUMENT and "scale_inv is null" in msg
    rc, msg = call("fp8rl_quantize_1x128", -1, 4, DT_F32, 1, 0.0, 1, 0, x, q, s, None, None)
    assert rc == INVALID_ARGUMENT and "rows" in msg
    rc, msg = call("fp8rl_quantize_1x128", 2, 4, 7, 1, 0.0, 1, 0, x, q, s, None, None)
    assert rc == INVALID_ARGUMENT and "src_dtype" in msg


# ------------------------------------------------------------------------------------------------
# INT4.

INT4_SHAPES = [(1, 1), (3, 300), (130, 257), (4, 40), (0, 128), (2, 0), (8, 1000)]


@pytest.mark.parametrize("dtype", [DT_F32, DT_BF16], ids=["f32", "bf16"])
@pytest.mark.parametrize("group", [32, 128])
def test_int4_fake_quant_pack_unpack_bitwise(dtype, group):
    rng = np.random.default_rng(20 + group + dtype)
    for rows, cols in INT4_SHAPES:
        what = f"{rows}x{cols} group={group} dtype={dtype}"
        buf, x, _ = source(rand_matrix(rng, rows, cols, edges=False), dtype)
        if x.size:
            x[0, : min(cols, group)] = 0  # an all-zero group: the 1e-5 floor
            buf, x, _ = source(x, dtype)
        scale, level, y = ref_int4(x, group)
        want_y = y if dtype == DT_F32 else y.astype(BF16).view(np.uint16)

        got_y = np.zeros_like(buf)
        check_call("fp8rl_int4_fake_quant", rows, cols, group, dtype, buf, got_y)
        assert_bitwise(got_y, want_y, f"int4 fake-quant {what}")

        pc = -(-cols // 8)
        packed = np.zeros((rows, pc), np.int32)
        sc = np.zeros((rows, -(-cols // group)), np.uint16)
        check_call("fp8rl_int4_pack", rows, cols, group, dtype, buf, packed, sc)
        nib = np.zeros((rows, pc * 8), np.uint32)
        nib[:, :cols] = (level.astype(np.int32) + 8).astype(np.uint32)
        words = np.zeros((rows, pc), np.uint32)
        for j in range(8):
            words |= nib[:, j::8] << np.uint32(4 * j)
        assert_bitwise(packed, words.view(np.int32), f"int4 packed {what}")
        assert_bitwise(sc, scale.astype(BF16).view(np.uint16), f"int4 scale {what}")

        full = np.repeat(scale, group, axis=1)[:, :cols]
        unpacked = ((nib[:, :cols].astype(np.int32) - 8).astype(F32) * full).astype(F32)
        unpacked16 = unpacked.astype(BF16).view(np.uint16)
        for out_dtype, want in ((DT_F32, unpacked), (DT_BF16, unpacked16)):
            out = np.zeros(want.shape, want.dtype)
            check_call("fp8rl_int4_unpack", rows, cols, group, packed, sc, out, out_dtype)
            assert_bitwise(out, want, f"int4 unpack out_dtype={out_dtype} {what}")


def test_int4_non_finite():
    x = np.full((2, 64), 0.5, F32)
    x[0, 3] = np.inf
    x[1, 40] = np.nan
    scale, level, y = ref_int4(x, 32)
    got = np.zeros_like(x)
    check_call("fp8rl_int4_fake_quant", 2, 64, 32, DT_F32, x, got)
    assert (np.isnan(got) == np.isnan(y)).all()
    assert_bitwise(got[~np.isnan(y)], y[~np.isnan(y)], "int4 fake-quant finite groups")
    rc, msg = call("fp8rl_int4_pack", 2, 64, 32, DT_F32, x, np.zeros((2, 8), np.int32),
                   np.zeros((2, 2), np.uint16))
    assert rc == INVALID_ARGUMENT and "row 0, column 3" in msg


# ------------------------------------------------------------------------------------------------
# GEMM.


def quantize_operand(rng, rows, k, tile, ld=0):
    """An operand [rows, k] quantized by the NumPy reference: (q, scale_inv in the kernel layout,
    ld, float64 dequantized values)."""
    x = rand_matrix(rng, rows, k, edges=False).astype(BF16).astype(F32)
    if tile == 0:
        q, s = ref_quant(x, 1, 128, True, 0.0, BF16_MAX)
        deq = e4m3_values(q).astype(np.float64) * np.repeat(s, 128, axis=1)[:, :k]
        return q, np.ascontiguousarray(s.T), 0, deq
    q, s = ref_quant(x, 128, 128, False, 0.0, BF16_MAX)
    lt = -(-k // 128)
    ld = ld or lt
    sp = np.zeros((s.shape[0], ld), F32)
    sp[:, :lt] = s
    deq = e4m3_values(q).astype(np.float64) * np.repeat(np.repeat(s, 128, 0), 128, 1)[:rows, :k]
    return q, sp, ld, deq


GEMM_CASES = [  # (m, n, k, a_tile, b_tile, b_ld): tile 0 = 1x128, 1 = 128x128
    (3, 130, 300, 0, 1, 4), (64, 192, 256, 0, 1, 0), (130, 257, 384, 1, 0, 0),
    (17, 64, 129, 0, 0, 0), (1, 1, 1, 0, 1, 0), (200, 96, 1000, 0, 1, 8), (5, 0, 128, 0, 0, 0),
]


@pytest.mark.parametrize("m,n,k,a_tile,b_tile,b_ld", GEMM_CASES)
def test_gemm_matches_float64_matmul(m, n, k, a_tile, b_tile, b_ld):
    rng = np.random.default_rng(m * 7 + n * 3 + k)
    qa, sa, lda, da = quantize_operand(rng, m, k, a_tile)
    qb, sb, ldb, db = quantize_operand(rng, n, k, b_tile, b_ld)
    ref = da @ db.T
    d = np.zeros((m, n), F32)
    gemm = ("fp8rl_gemm_blockscaled", m, n, k, a_tile, b_tile, lda, ldb)
    check_call(*gemm, DT_F32, 0, qa, sa, qb, sb, d)
    den = np.linalg.norm(ref)
    err = np.linalg.norm(d - ref) / den if den else np.linalg.norm(d)
    assert err <= 1e-6, f"rel Frobenius {err:.3g}"

    # Accumulation adds to D and rounds once; BF16 output is within bf16 rounding.
    d0 = rng.standard_normal((m, n)).astype(F32)
    acc = d0.copy()
    check_call(*gemm, DT_F32, 1, qa, sa, qb, sb, acc)
    assert_bitwise(acc, (d0 + d).astype(F32), "accumulate f32")
    h = np.zeros((m, n), np.uint16)
    check_call(*gemm, DT_BF16, 0, qa, sa, qb, sb, h)
    err16 = np.linalg.norm(h.view(BF16).astype(np.float64) - ref) / den if den else 0.0
    assert err16 <= 4e-3, f"bf16 rel Frobenius {err16:.3g}"


def test_gemm_rejects_2d_by_2d():
    rc, msg = call("fp8rl_gemm_blockscaled", 4, 4, 128, 1, 1, 0, 0, DT_F32, 0, None, None, None,
                   None, None)
    assert rc == INVALID_ARGUMENT and "128x128 x 128x128" in msg
