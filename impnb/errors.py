"""The exceptions impnb raises. Each one says what went wrong and, where it can, what to do."""


class ImpnbError(Exception):
    """Base class for every error impnb raises on purpose."""


class FormatError(ImpnbError, ValueError):
    """A checkpoint, tensor or file does not follow its format (names file and tensor where known)."""


class ConfigError(FormatError):
    """A model-metadata field (config.json, GGUF metadata, a quantization config) breaks its rule.

    Attributes: source (the file), field (the key), value, rule (what the value must be)."""

    def __init__(self, source: str, field: str, value, rule: str):
        self.source, self.field, self.value, self.rule = str(source), str(field), value, rule
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        super().__init__(f"{self.source}: {self.field} = {shown}: {rule}")


class TemplateBudgetError(FormatError):
    """A chat template exceeded its render budget (time, output size, memory, or a size-bounded operation)."""


class BackendUnavailable(ImpnbError, RuntimeError):
    """The requested backend cannot run here: no usable GPU, or the op has no CUDA path yet."""


class Unsupported(ImpnbError, NotImplementedError):
    """The fast path cannot take this input (dtype, shape, layout). It never reroutes silently."""


class CrossCheckError(ImpnbError, AssertionError):
    """backend="check" found the CUDA result outside the tolerance table's rule for this op.

    Attributes: op, rule, index (worst element), reference, fast (the two values there),
    reference_bits, fast_bits (hex bit patterns), mismatches (count), total; ``layer`` (the decoder layer the op
    ran in, None outside the layers) and ``where`` once a model adds that context (``in_context``).
    """

    def __init__(self, op, rule, index, reference, fast, reference_bits, fast_bits, mismatches, total, detail=""):
        self.op, self.rule, self.index = op, rule, index
        self.reference, self.fast = reference, fast
        self.reference_bits, self.fast_bits = reference_bits, fast_bits
        self.mismatches, self.total = mismatches, total
        self.layer, self.where = None, None
        msg = (f"{op}: {mismatches}/{total} elements outside {rule}; worst at index {index}: "
               f"reference={reference!r} ({reference_bits}) fast={fast!r} ({fast_bits})")
        super().__init__(msg + (f"; {detail}" if detail else ""))

    def in_context(self, layer, where: str) -> "CrossCheckError":
        """Name where in the model the op ran: ``layer`` (int or None) and a phrase such as "layer 3"."""
        if self.where is None:
            self.layer, self.where = layer, where
            self.args = (f"first op outside its tolerance: {where}, {self.args[0]}",) + self.args[1:]
        return self


class UnsupportedArchitecture(Unsupported, ValueError):
    """The checkpoint's architecture is not one impnb implements; the message lists the supported ones."""
