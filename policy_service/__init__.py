"""policy_service package (see docs/architecture.md)."""
