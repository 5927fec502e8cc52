"""Session 41: `mango bench gpu --parts switch` with pinned uploads and with plain copies, in the order
pinned, plain, pinned, plain in one process (call 90 read a change into r16/b3/g0.75 at 68 ms where call 87,
before the pinned uploads, read 5.6 ms: one reading each; one timed pass each, as the part ran then).
Usage: python results/gpu-h200-next/s41/switch_ab.py OUT_DIR"""

import sys

from benchmarks import gpu
from client.compression import transfer

for i, pinned in enumerate((True, False, True, False)):
    transfer.PINNED = pinned
    out = f"{sys.argv[1]}/{'pinned' if pinned else 'plain'}-{i}"
    gpu.main(["--out", out, "--parts", "switch", "--switch-repeats", "1"])
