#!/bin/bash
# Session 40, for the next session's first call (carry .whl13p; CALL_LIMIT <= 560). Sessions 39-40 asked for
# an H200 seven times and got H100s: the H200 has not timed the 8-bit tile (shipped in session 40) nor run the
# compiled tests since session 38.
# 1. the compiled tests: `pytest -m gpu` (new: test_uploads_and_singular_vectors_do_not_wait_on_the_way_back,
#    the sync debug mode around fused.upload) and test_fused.py (the shape-derived whole-block count);
# 2. the setting-change table after the pinned uploads (session 40's call 87 is the before: 16.2 ms into
#    r4/b8/g0, 0.84 of a training step);
# 3. the whole grid with paired energy windows of 2 s (1 s windows were good to about +-10 %);
# 4. the fewer-instructions kernel against the landed one at the shipped tile, in what is left.
WHL=.whl13p source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
gpu_tests
switch s41
timeout 260 python3 -m mango_cli bench gpu --out $R/grid --parts step --energy-window-s 2.0 \
  --optimizers=-bnb,-torchao,-Flash,-GaLore,-APOLLO,-torch-path,-unchecked,-stochastic,-factored,-nf4,-nearest > $R/grid.log 2>&1
step grid $?; cat $R/grid/*.md >> $L 2>/dev/null || grep "AdamW" $R/grid.log | tail -25 >> $L
SHORT="r0/b8/g0|,r0/b8/g0|error_feedback=False,r0/b4/g0|"
var landed "$SHORT"
with_fewer_kernel var fewer "$SHORT"
finish
