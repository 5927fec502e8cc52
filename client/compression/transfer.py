"""Host-to-device copies that do not wait for the device.

A copy from pageable host memory to a GPU synchronizes the stream (torch's ``non_blocking=False`` copy ends in
``cudaStreamSynchronize``): every small table a plan rebuild or a setting change uploads would drain the queue
the training loop had built up. Through pinned memory the copy is queued like a kernel; torch's pinned-memory
cache does not reuse the block before the copy has read it.
"""

from __future__ import annotations

import torch

#: Route a host tensor bound for a GPU through pinned memory (False: a plain copy, which waits for the
#: stream; for the A/B of ``mango bench gpu --parts switch``: a pinned block costs a ``cudaHostAlloc`` the
#: first time a size is asked for).
PINNED = True


def upload(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``: a host tensor goes to a GPU through pinned memory without waiting; anything else
    (a CPU target, a tensor already on a device) is ``t.to(device)``."""
    if not PINNED or device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def upload_into(dst: torch.Tensor, t: torch.Tensor) -> None:
    """Copy the host tensor ``t`` into ``dst`` in place, queued like :func:`upload` (through pinned memory on
    a GPU, no wait): for a buffer whose address a CUDA graph or an address table holds."""
    if PINNED and dst.device.type == "cuda" and t.device.type == "cpu":
        t = t.pin_memory()
    dst.copy_(t, non_blocking=dst.device.type == "cuda")
