#!/bin/bash
# Session 35 (carry .whl13s and .old; CALL_LIMIT <= 560). .old/optimizer.py is afba452~1's
# (`git show afba452~1:client/compression/optimizer.py > .old/optimizer.py`: before the zero buffers).
# 1. the compiled tests (the zero buffers at a change; MangoAdamW.last_grad_norm on the fused path);
# 2. issue 12: `mango bench gpu --parts switch` with the old optimizer.py, then today's, one machine;
# 3. issue 13: the demo on gpt-85m under balanced with the new default policy (s35a), one seed.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
gpu_tests
cp client/compression/optimizer.py /tmp/optimizer.new.py
cp .old/optimizer.py client/compression/optimizer.py && switch old
cp /tmp/optimizer.new.py client/compression/optimizer.py && switch new
left=$(left_s)
[ $left -ge 120 ] && DEMO_TIMEOUT=$left SEEDS=1 demo_obj balanced-gpt85m balanced r0/b4/g0
finish
