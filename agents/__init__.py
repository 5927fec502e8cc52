"""agents package (see docs/architecture.md)."""
