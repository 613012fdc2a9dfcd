"""impnb's fast path: one module per op family (same names and signatures as impnb.reference), with Numba-CUDA
kernels and CuPy RawKernels (impnb/cuda/kernels/<family>.cu + the one header impnb.cuh). A family module also holds
the launchers the CUDA engine (impnb/engine) calls on resident buffers: the same kernels as the ops. Underscored
modules are infrastructure (launching, allocation with test canaries, device weight formats). Modules here are
imported lazily by impnb.ops, so importing impnb needs no GPU stack."""
