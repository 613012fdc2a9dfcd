"""impnb's fast path: Numba-CUDA kernels and CuPy RawKernels with the same names and signatures as
impnb.reference. Modules here are imported lazily by impnb.ops, so importing impnb needs no GPU stack."""
