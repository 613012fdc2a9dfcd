"""Write golden/op_core.npz + golden/manifest.json: language-neutral conformance vectors of the op-core formats.

    python tools/make_golden.py            # (re)write golden/
    python tools/make_golden.py --check    # compare a fresh build with golden/ and exit 1 on any difference

Every array is built deterministically (fixed seed, NumPy's PCG64) from impnb's NumPy reference; the manifest
says what each array means, its dtype and shape, and the SHA-256 of its little-endian bytes, so an engine in any
language can test itself against the file without Python. tests/test_golden_vectors.py regenerates and compares.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

from impnb.reference import fp4, fp8, nvfp4

FORMAT_VERSION = 1
SEED = 20261122
GOLDEN_DIR = Path(__file__).resolve().parent.parent / "golden"
F32 = np.float32
N, K, M = 8, 64, 3  # the NVFP4 weight [N, K] and the GEMM activations [M, K]


def _fp8_inputs(rng) -> np.ndarray:
    grid = fp8.fp8_e4m3_decode(np.arange(0x7F, dtype=np.uint8)).astype(np.float64)
    mids = np.concatenate([(grid[:-1] + grid[1:]) / 2, [464.0]]).astype(F32)
    around = np.concatenate([np.nextafter(mids, F32(0)), mids, np.nextafter(mids, F32(np.inf))])
    specials = np.array([300, 480, 1e30, np.inf, -np.inf, np.nan, -np.nan, -0.0, 0.0, -1e-10], F32)
    wide = np.exp2(rng.uniform(-30, 14, 256)) * np.where(rng.random(256) < 0.5, -1, 1)
    return np.concatenate([specials, around, -around, wide]).astype(F32)


def _e2m1_inputs(rng) -> np.ndarray:
    ties = fp4.TIES.astype(F32)
    around = np.concatenate([np.nextafter(ties, F32(0)), ties, np.nextafter(ties, F32(np.inf))])
    specials = np.array([0.0, -0.0, -1e-30, 6.5, -7.0, np.inf, -np.inf], F32)
    return np.concatenate([specials, around, -around, rng.uniform(-8, 8, 128)]).astype(F32)


def _weight(rng) -> np.ndarray:
    """[N, K] bf16-representable float32 with an all-zero block, an FP8-underflow block, an outlier and a -0.0."""
    w = rng.standard_normal((N, K)) * 0.02
    w[0, :16] = 0.0
    w[N - 1, K - 16:] *= 1e-7
    w[N // 2, K // 2] = 0.75
    w[1, 1] = -0.0
    bits = w.astype(F32).view(np.uint32) & np.uint32(0xFFFF0000)  # truncate to bf16: exact in float32
    return bits.view(F32)


def _nvfp4_vectors(tag: str, layout: str, w, x, xm) -> dict[str, np.ndarray]:
    t = nvfp4.nvfp4_quantize(w, layout=layout)
    dq = nvfp4.nvfp4_dequantize(t).astype(np.float64)
    return {
        f"{tag}.w": w, f"{tag}.packed": t.packed, f"{tag}.scales": t.scales,
        f"{tag}.global_scale": np.array([t.global_scale], F32), f"{tag}.dequant": nvfp4.nvfp4_dequantize(t),
        f"{tag}.x": x, f"{tag}.gemv": nvfp4.nvfp4_gemv(t, x), f"{tag}.gemv_f64": dq @ x.astype(np.float64),
        f"{tag}.gemv_abs": np.abs(dq) @ np.abs(x.astype(np.float64)),
        f"{tag}.X": xm, f"{tag}.gemm": nvfp4.nvfp4_gemm(t, xm),
    }


def build_vectors() -> dict[str, np.ndarray]:
    """Every golden array, by name (deterministic)."""
    rng = np.random.default_rng(SEED)
    x8, x4, w = _fp8_inputs(rng), _e2m1_inputs(rng), _weight(rng)
    codes = rng.integers(0, 16, (4, 16), dtype=np.uint8)
    x, xm = rng.standard_normal(K).astype(F32), rng.standard_normal((M, K)).astype(F32)
    out = {
        "fp8_encode.x": x8, "fp8_encode.saturating": fp8.fp8_e4m3_encode(x8),
        "fp8_encode.non_saturating": fp8.fp8_e4m3_encode(x8, saturate=False),
        "fp8_decode.codes": np.arange(256, dtype=np.uint8),
        "fp8_decode.values": fp8.fp8_e4m3_decode(np.arange(256, dtype=np.uint8)),
        "e2m1_encode.x": x4, "e2m1_encode.codes": fp4.e2m1_encode(x4),
        "e2m1_decode.codes": np.arange(16, dtype=np.uint8),
        "e2m1_decode.values": fp4.e2m1_decode(np.arange(16, dtype=np.uint8)),
        "fp4_pack.codes": codes, "fp4_pack.packed": fp4.fp4_pack(codes),
    }
    out.update(_nvfp4_vectors("nvfp4_ct", "compressed-tensors", w, x, xm))
    out.update(_nvfp4_vectors("nvfp4_modelopt", "modelopt", w, x, xm))
    return out


MEANING = {
    "fp8_encode.x": "float32 inputs: specials, every E4M3 midpoint (and 464) with its float32 neighbours, both "
                    "signs, 256 random values of magnitude 2^-30..2^14",
    "fp8_encode.saturating": "E4M3FN bytes, RNE, SATFINITE: |x| > 464 and +-inf -> 0x7E|sign, NaN -> 0x7F|sign",
    "fp8_encode.non_saturating": "E4M3FN bytes, RNE, overflow and +-inf -> 0x7F|sign (ml_dtypes / __NV_NOSAT)",
    "fp8_decode.codes": "all 256 bytes",
    "fp8_decode.values": "their float32 values (0x7F/0xFF: NaN 0x7FC00000/0xFFC00000; 0x80: -0.0)",
    "e2m1_encode.x": "float32 inputs: specials, every E2M1 tie with its float32 neighbours, both signs, random",
    "e2m1_encode.codes": "E2M1 codes 0..15: RNE, +-6 saturation, -0.0 -> 0x0, negative underflow -> 0x8, NaN -> 0x7",
    "e2m1_decode.codes": "all 16 codes", "e2m1_decode.values": "their float32 values (0x8: -0.0)",
    "fp4_pack.codes": "uint8 codes [4, 16]", "fp4_pack.packed": "bytes [4, 8]: element 2i in the low nibble",
}
for _tag, _layout, _rule in (("nvfp4_ct", "compressed-tensors", "divisor gs: w = q * (s / gs)"),
                             ("nvfp4_modelopt", "modelopt", "multiplier ws2: w = q * (s * ws2)")):
    MEANING.update({
        f"{_tag}.w": f"float32 weight [{N}, {K}] (bf16-representable; an all-zero block at row 0, an FP8-underflow "
                     f"block at the last row's last block, an outlier owning amax, a -0.0)",
        f"{_tag}.packed": f"nvfp4_quantize(w, layout={_layout!r}).packed: uint8 [{N}, {K // 2}]",
        f"{_tag}.scales": f"its FP8 E4M3 block scales: uint8 [{N}, {K // 16}], block g = columns 16g..16g+15",
        f"{_tag}.global_scale": f"its per-tensor float32 scalar, shape [1]: {_rule}",
        f"{_tag}.dequant": "nvfp4_dequantize: float32, exact (one rounding per element in the layout's order)",
        f"{_tag}.x": f"float32 activations [{K}]",
        f"{_tag}.gemv": "nvfp4_gemv(t, x) in impnb's float32 order (16-element block partials, blocks in order); "
                        "another engine's order is held to |y - gemv| <= 2 * gamma~ * gemv_abs, gamma~ = "
                        "expm1(8 sqrt(K+2) u + (K+2) u^2 / (1-u)), u = 2^-24 (impnb/tolerances.py)",
        f"{_tag}.gemv_f64": "float64 dequant @ x: the exact product", f"{_tag}.gemv_abs": "float64 |dequant| @ |x|",
        f"{_tag}.X": f"float32 activations [{M}, {K}]", f"{_tag}.gemm": f"nvfp4_gemm(t, X): float32 [{M}, {N}]",
    })


def manifest(vectors: dict[str, np.ndarray]) -> dict:
    arrays = {name: {"dtype": a.dtype.name, "shape": list(a.shape), "meaning": MEANING[name],
                     "sha256": hashlib.sha256(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes())
                     .hexdigest()} for name, a in vectors.items()}
    return {"format_version": FORMAT_VERSION, "generator": "python tools/make_golden.py", "seed": SEED,
            "file": "op_core.npz (an uncompressed ZIP of NPY v1 files, one per array, named <array>.npy; little-endian)",
            "rounding": "every encoder is round-to-nearest-even; see README ## Numerics", "arrays": arrays}


def write(directory: Path = GOLDEN_DIR) -> None:
    vectors = build_vectors()
    directory.mkdir(parents=True, exist_ok=True)
    _write_npz(directory / "op_core.npz", vectors)
    (directory / "manifest.json").write_text(json.dumps(manifest(vectors), indent=1) + "\n")
    print(f"wrote {len(vectors)} arrays to {directory}/op_core.npz and manifest.json")


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez's format (uncompressed ZIP of .npy files) with fixed timestamps: same arrays, same bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, a in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())


def differences(directory: Path = GOLDEN_DIR) -> list[str]:
    """Names of arrays whose fresh build differs from the committed file (bits, dtype or shape), or that are missing."""
    fresh = build_vectors()
    with np.load(directory / "op_core.npz") as stored:
        names = set(stored.files) | set(fresh)
        return sorted(n for n in names if n not in stored.files or n not in fresh
                      or not _same_bits(stored[n], fresh[n]))


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with golden/ instead of writing")
    parser.add_argument("--dir", type=Path, default=GOLDEN_DIR)
    args = parser.parse_args(argv)
    if not args.check:
        write(args.dir)
        return 0
    diff = differences(args.dir)
    print("golden vectors match" if not diff else f"{len(diff)} arrays differ: {', '.join(diff)}")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
