"""``--quantize nvfp4``: one weight plan for both backends, with every dense linear quantized to NVFP4 at load."""
from __future__ import annotations


class QuantizedLinears:
    """``--quantize nvfp4``: the checkpoint's tensors with every dense linear weight (attention and MLP projections,
    the LM head; a tied head gets its own ``lm_head.weight``) quantized to NVFP4 with impnb.ops.nvfp4_quantize,
    once, on first read. Both backends read this same mapping, so ``--backend check`` compares like with like;
    embeddings, norms, routers and stacked experts stay as they are."""

    _LINEAR = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight", "gate_proj.weight",
               "up_proj.weight", "down_proj.weight")

    def __init__(self, config, tensors):
        from ..model.weights import canonical
        self.tensors, self._done = tensors, {}
        self.names = list(tensors)
        canon = {canonical(k) for k in self.names}
        self._tied_head = "lm_head.weight" not in canon
        if self._tied_head:
            embed = next(k for k in self.names if canonical(k) == "embed_tokens.weight")
            self._embed_name = embed
            self.names.append("lm_head.weight")

    def _wants(self, name: str) -> bool:
        return name == "lm_head.weight" or (".mlp.experts." not in name and name.endswith(self._LINEAR))

    def __getitem__(self, name):
        if name in self._done:
            return self._done[name]
        tied = name == "lm_head.weight" and self._tied_head
        source = self.tensors[self._embed_name] if tied else self.tensors[name]
        from ..formats import NVFP4Tensor
        if self._wants(name) and not isinstance(source, NVFP4Tensor) and getattr(source, "ndim", 0) == 2:
            from ..cuda._device_weights import _float32, quantize
            value = quantize(_float32(source), name)
            value = value.to_host() if not hasattr(source, "__cuda_array_interface__") else value
            self._done[name] = value
            return value
        return source

    def __iter__(self):
        return iter(self.names)

    def __len__(self):
        return len(self.names)

    def __contains__(self, name):
        return name in self.names

    def keys(self):
        return list(self.names)
