"""The CUDA engine: orchestration only (resident buffers, the captured decode graph, prefill scheduling). Every
kernel it launches is a registered op's CUDA path (impnb/cuda/<family>.py, kernels in impnb/cuda/kernels/).

    engine.py   Engine: device state, buffers, graph capture and replay, greedy generation
    layers.py   the per-layer decode launches (which op each kernel belongs to)
    weights.py  checkpoint tensors -> resident weights, KV caches, RoPE tables (the reference's weight plan)
    prefill.py  chunked prefill through cuBLAS and the ops' row kernels
    model.py    EngineModel / CheckedModel: the model API on the engine, and --backend check
"""
