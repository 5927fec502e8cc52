#!/bin/bash
# Prepared in session 21, not run (no device time left). Issue 13: the GPU cells of the selection rule for
# s21L54 (s20j52's recipe and seed, trained on the surrogate with the late-entry term): memory-first and
# balanced on gpt-85m, 2 seeds each, the static r64/b4/g0 run in each demo. The default s20j52 measured on
# an H100 in session 21: memory-first 0.186 / 0.206 (tie with static r64/b4/g0), balanced 0.789 / 0.793
# (static 0.630 / 0.717; s18c33 0.673 / 0.657 in session 20). s21L54 must beat s20j52 in both. ~560 s on a
# fresh machine. Carry .whl13 (../shared/tools/gpu-wheels.sh fastapi-offline && mv .whl .whl13).
source results/gpu-h200-next/preamble.sh
C=${CAND:-s21L54}
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
P="--policy $C --policy-dir results/policy-$C"
DEMO_TIMEOUT=230 demo_obj bal-gpt85m-$C balanced r64/b4/g0 $P
DEMO_TIMEOUT=150 demo_mf gpt85m-$C r64/b4/g0 $P
left=$(( 560 - ($(date +%s)-t0) )); echo "left $left" >> $L
[ $left -gt 100 ] && DEMO_TIMEOUT=$left demo_mf lmmed-$C r64/b4/g0 --model lm-medium --steps 600 --batch-size 32 $P
finish
