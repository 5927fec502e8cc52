#!/bin/bash
# Prepared in session 25, not run. Issue 13's balanced goal cell with enough seeds to see a 10 % margin: the
# candidate s24L47 on gpt-85m, 8 new seeds (4-11), against static r0/b4/g0 (the best static setting measured
# there). `mango verdict` over calls 27 + 29 (4 seeds, where s21L55 played r0/b8/g0 then r0/b4/g0 and s24L47 answers every
# window alike: `mango bench replay`) gives J 0.499 vs 0.562, +0.063 +/- 0.080, and "+/- 10 % of 0.562 needs
# ~6 seeds at this spread". These runs use the fused AdamW baseline (session 25), so pool their J with the
# earlier seeds only as paired differences. ~560 s. Carry .whl13. Then: `mango verdict DIR/summary.json`, and
# `mango bench replay DIR --policy s24L47=results/policy-s24L47` as a check.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
SEEDS=8 DEMO_TIMEOUT=560 demo_obj bal-gpt85m-s24L47-8s balanced r0/b4/g0 --seed 4 --policy s24L47 --policy-dir results/policy-s24L47
finish
