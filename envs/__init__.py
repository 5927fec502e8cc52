"""envs package (see docs/architecture.md)."""
