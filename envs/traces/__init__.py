"""Recorded training-backend traces and the fitted surrogate model shipped with the package (data only)."""
