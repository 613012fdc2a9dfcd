"""impnb's reference: pure NumPy, written to be read. Each op's docstring states its math; this *is* the spec."""
