"""Shared test configuration: one torch thread; GPU tests skip where no CUDA device is present."""

from __future__ import annotations

import pytest
import torch

# The suite's tensors are small, and `make test` runs on a shared 2-core machine: there, intra-op threads
# spend their time in OpenMP barriers (a 128 x 64 QR, the optimizer's orthonormalization, measured ~100x
# slower on two threads than on one while the other core is busy). One thread for every in-process test;
# tests that spawn workers or commands set their own. The fixture below puts it back after code under test
# changed it (a command's --threads).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> None:
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
