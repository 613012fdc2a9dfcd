"""Opcode histogram of one nvfp4_gemv_kernel instantiation (needs nvcc and cuobjdump; run on the device machine).

    python tools/sass_mix.py "nvfp4_gemv_kernel<2,1,16,2>"
Counts instructions in the SASS (static, not executed counts): a quick check that loads are 128-bit, no local
memory, and how the E2M1 decode splits between the integer and FMA pipes.
"""
from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from impnb.cuda._launch import kernel_source  # noqa: E402
from impnb.cuda.nvfp4 import KERNELS  # noqa: E402


def main(name: str) -> int:
    base, targs = re.fullmatch(r"(\w+)<([\d,]+)>", name).groups()
    inst = (f"template __global__ void {base}<{targs}>(const u8*, const u8*, const float*, float*, int, int, "
            "float, int);")
    with tempfile.TemporaryDirectory() as tmp:
        src, cubin = os.path.join(tmp, "k.cu"), os.path.join(tmp, "k.cubin")
        with open(src, "w") as f:
            f.write(kernel_source(KERNELS) + "\n" + inst + "\n")
        subprocess.run(["nvcc", "-arch=sm_90", "-cubin", "-std=c++17", "-ftz=true", "-o", cubin, src], check=True)
        sass = subprocess.run(["cuobjdump", "-sass", cubin], capture_output=True, text=True, check=True).stdout
    mangled = re.escape(f"{base}ILi" + "ELi".join(targs.split(",")))
    body = re.split(r"Function : ", sass)
    text = next((b for b in body if re.search(mangled, b.split("\n", 1)[0])), "")
    ops = collections.Counter(m.group(1) for m in re.finditer(r"/\*[0-9a-f]{4}\*/\s+(?:@!?U?P\w+\s+)?([A-Z0-9_.]+)", text))
    print(f"{name}: {sum(ops.values())} instructions")
    for op, count in ops.most_common(25):
        print(f"  {count:5d} {op}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "nvfp4_gemv_kernel<2,1,16,2>"))
