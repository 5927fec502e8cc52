#!/bin/bash
# Session 44, a short third call (carry .whl13p; CALL_LIMIT ~290), for an H200 if one comes: the step graph's
# compiled tests, then the grid with 2 s paired windows (host_ms column) in what is left (~190 s).
WHL=.whl13p source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
lscpu | grep -E "Model name|^CPU\(s\)" >> $L
timeout 60 python3 -m pytest -q -n 8 -p no:cacheprovider -m gpu tests/client/test_step_graph.py > $R/gpu-tests.log 2>&1
step gpu-tests-graph $?; grep -E "FAILED|ERROR|passed|failed" $R/gpu-tests.log | tail -6 >> $L
timeout $(left_s) python3 -m mango_cli bench gpu --out $R/grid --parts step --energy-window-s 2.0 \
  --optimizers=-bnb,-torchao,-Flash,-GaLore,-APOLLO,-torch-path,-unchecked,-stochastic,-factored,-nf4,-nearest,-full-v > $R/grid.log 2>&1
step grid $?; cat $R/grid/*.md >> $L 2>/dev/null || grep -E "^\{" $R/grid.log | tail -25 >> $L
finish
