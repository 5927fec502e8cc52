#!/bin/bash
# Session 44, second call (carry .whl13p; CALL_LIMIT ~380): 1. the whole `-m gpu` suite and the fused tests
# compiled (call 102 read one failure: test_step_graph's statistics compared exactly, 1 ulp of an atomic sum
# apart; now compared to rel 1e-5); 2. a second reading of the grid with 2 s paired windows (host_ms column)
# in what is left, on this call's host.
WHL=.whl13p source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
lscpu | grep -E "Model name|^CPU\(s\)|MHz" >> $L
gpu_tests
timeout $(left_s) python3 -m mango_cli bench gpu --out $R/grid --parts step --energy-window-s 2.0 \
  --optimizers=-bnb,-torchao,-Flash,-GaLore,-APOLLO,-torch-path,-unchecked,-stochastic,-factored,-nf4,-nearest,-full-v > $R/grid.log 2>&1
step grid $?; cat $R/grid/*.md >> $L 2>/dev/null || grep "AdamW" $R/grid.log | tail -25 >> $L
finish
