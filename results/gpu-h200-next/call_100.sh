#!/bin/bash
# Session 43, a short call (carry .whl13p): where a projected step's host time goes. Call 99's host made the
# projected rows 1.3-1.9x slower than call 98's at unchanged rank-0 rows and lower power (host-bound);
# `--parts profile` gives host ms a step (launches queued), device ms, and a cProfile of 50 Mango steps.
WHL=.whl13p source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
lscpu | grep -E "Model name|MHz" >> $L
timeout $(left_s) python3 -m mango_cli bench gpu --out $R/prof --parts profile \
  --optimizers "=torch AdamW (fused),=MangoAdamW r0/b8/g0,=MangoAdamW r4/b8/g0,=MangoAdamW r32/b32/g1" > $R/prof.log 2>&1
step profile $?; cat $R/prof/*.md >> $L 2>/dev/null
finish
