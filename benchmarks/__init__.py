"""benchmarks package (see docs/architecture.md)."""
