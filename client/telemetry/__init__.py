"""Telemetry: energy meters, memory accounting, timing."""
