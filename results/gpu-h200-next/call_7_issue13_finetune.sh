#!/bin/bash
# Prepared in session 15, not run (the device budget was spent). Issue 13: s15z24, a fine-tune of the shipped
# s15x21 (`--init-from runs/s15x21/policy --ent-coef 0.003`, 2 M steps), plays r64/b8/g0 from the first
# decision under memory-first on the GPU and came within 12 % of the best static r64/b4/g0 in the surrogate
# (s15x21: 54 %), but plays r64/b8/g0 under balanced too and breaks the surrogate floor under loss-first. Is
# that so on the H200? Memory-first against the best static, balanced and loss-first against the floor.
# ~600 s: drop the last demo on a short budget. Carry .whl13.
source results/gpu-h200-next/preamble.sh
P="--policy s15z24 --policy-dir results/policy-s15z24"
demo_mf s15z24-r64b4 r64/b4/g0 $P
DEMO_TIMEOUT=200 demo_obj bal-s15z24 balanced r0/b8/g0 $P
DEMO_TIMEOUT=200 demo_obj lf-s15z24 loss-first r0/b8/g0 $P
finish
