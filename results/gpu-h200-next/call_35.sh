#!/bin/bash
# Prepared in session 25, not run. Issue 13's balanced goal cell with enough seeds to see a 10 % margin: the
# candidate s24L47 on gpt-85m, 7 new seeds (4-10), against static r0/b4/g0 (the best static setting measured
# there) and the open-loop schedule r0/b8/g0:1>r0/b4/g0 (the hand rule's 8-bit opening, then r0/b4/g0: what
# the policy played on calls 27 and 29, without the policy). `mango verdict` over calls 27 + 29 (4 seeds,
# where s21L55 played r0/b8/g0 then r0/b4/g0 and s24L47 answers every window alike: `mango bench replay`)
# gives J 0.499 vs 0.562, +0.063 +/- 0.080, and "+/- 10 % of 0.562 needs ~6 seeds at this spread". If the
# policy again plays the schedule, the demo calls the two "trained alike": the gain is then the opening's.
# These runs use the fused AdamW baseline (session 25), so pool them with earlier seeds only as paired
# differences. ~500 s (7 seeds x 4 runs x ~17 s). Carry .whl13. Then `mango verdict DIR/summary.json`, and
# `mango bench replay DIR --policy s24L47=results/policy-s24L47` as a check.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
SEEDS=7 DEMO_TIMEOUT=560 demo_obj bal-gpt85m-s24L47-7s balanced "r0/b4/g0,r0/b8/g0:1>r0/b4/g0" --seed 4 --policy s24L47 --policy-dir results/policy-s24L47
finish
