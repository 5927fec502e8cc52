#!/bin/bash
# Prepared in session 28, not run yet; session 29 added (1b): ask for an H200. (1) `pytest -m gpu` and the fused
# tests compiled, (1b) the step rows of the default r0/b8/g0 (nearest since session 29) and the old stochastic
# one (no H200 figure of either since session 28's call 44), (2) the paired convergence of the 4-bit second moment, factored (the default)
# against full, over three seeds (`--parts converge --seeds 3 --steps 600`; session 28's one seed: full v
# 1.4 % below AdamW's loss, factored 1.6 % above, at 1.69 against 1.14 B/param). ~450 s. Carry .whl13s.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
gpu_tests
timeout 100 python3 -m mango_cli bench gpu --out $R/step --parts step --optimizers "AdamW (fused),r0/b8/g0,r0/b4/g0,-torch-path,-g0.5,-unchecked" --energy-window-s 2.0 > $R/step.log 2>&1
step step $?; cat $R/step/*.md >> $L 2>/dev/null
converge $(left_s) 3 "AdamW (fused),r0/b4/g0,-torch-path,-g0.5,-unchecked,-no-EF"
finish
