"""Triton kernels for quantize / dequantize / pack (CUDA, or TRITON_INTERPRET=1 on CPU)."""
