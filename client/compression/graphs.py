"""Recording a piece of device work as a CUDA graph without stalling the training loop.

``torch.cuda.graph(...)`` synchronizes the device, collects garbage and empties the allocator's cache on
entry (every later allocation then pays a ``cudaMalloc``): recording needs none of that. :func:`record`
records on a side stream that waits for the caller's stream, so the graph reads what the queued work
writes when it is replayed, and hands the caller's stream back after.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

__all__ = ["record"]

T = TypeVar("T")


def record(work: Callable[[], T]) -> tuple[torch.cuda.CUDAGraph, T]:
    """Record (not run) the device work of ``work()`` as a CUDA graph; return it and ``work``'s result.
    Raises what the capture raised (a call that cannot be recorded: the caller stays eager). Captured in
    ``thread_local`` mode: another thread's CUDA calls do not break the recording."""
    graph = torch.cuda.CUDAGraph()
    main, side = torch.cuda.current_stream(), torch.cuda.Stream()
    side.wait_stream(main)
    try:
        with torch.cuda.stream(side):
            graph.capture_begin(capture_error_mode="thread_local")
            try:
                result = work()
            finally:
                graph.capture_end()
    finally:
        main.wait_stream(side)
    return graph, result
