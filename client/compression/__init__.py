"""Compression core: pure operators on tensors, Triton kernels, MangoAdamW (see docs/architecture.md)."""
