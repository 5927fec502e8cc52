#!/bin/bash
# Session 30, after call 56 (ask for an H200): (1) `pytest -m gpu` and the fused tests compiled with the early
# loads at 4 bits with the shift too (fused.EARLY_LOADS[(4, True)] = 128), (2) the paired convergence of 4 bits'
# two remaining costs, NF4 against uniform codes and stochastic rounding against nearest (`--parts converge
# --seeds 3 --steps 600`, the table rewritten after every run), (3) the step rows of the whole bench grid (21
# settings) beside fused AdamW, peers left out, while the call's time lasts. Carry .whl13s. ~450 s.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
gpu_tests
timeout 240 python3 -m mango_cli bench gpu --out $R/conv --parts converge --seeds 3 --steps 600 \
  --optimizers "AdamW (fused),r0/b4/g0,-torch-path,-g0.5,-unchecked,-factored,-no-EF" > $R/conv.log 2>&1
step converge $?; cat $R/conv/*.md >> $L 2>/dev/null
left=$(( ${CALL_LIMIT:-450} - ($(date +%s)-t0) - 5 )); echo "left $left" >> $L
timeout $left python3 -m mango_cli bench gpu --out $R/grid --parts step --energy-window-s 1.0 \
  --optimizers=-torch-path,-unchecked,-stochastic,-no-EF,-factored,-uniform,-nearest,-bnb,-torchao,-Flash,-GaLore,-APOLLO > $R/grid.log 2>&1
step grid $?; cat $R/grid/*.md >> $L 2>/dev/null || grep "MangoAdamW\|AdamW" $R/grid.log | tail -25 >> $L
finish
