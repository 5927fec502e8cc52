#!/bin/bash
# Session 23. Issue 12: the factored v's sums of c^2 in each program's own slots (fused.FACTOR_SUMS =
# "partials", a variant) against the atomics, on the variants part, and its tests compiled. Issue 13: the
# shipped policy against the best of several static settings in hindsight (`--static-setting` with a list):
# balanced and memory-first on gpt-85m. ~590 s on a fresh machine. Carry .whl13.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
timeout 150 python3 -m mango_cli bench gpu --out $R/var --parts variants --optimizers "r0/b4/g,r8/b4/g0" > $R/var.log 2>&1
step variants $?; cat $R/var/*.md >> $L 2>/dev/null
timeout 80 python3 -m pytest -q -n 8 -p no:cacheprovider tests/client/test_fused.py > $R/fused.log 2>&1
step fused-tests $?; tail -2 $R/fused.log >> $L
DEMO_TIMEOUT=230 demo_obj bal-gpt85m-hind balanced r0/b4/g0,r0/b8/g0,r0/b2/g0
left=$(( 585 - ($(date +%s)-t0) )); echo "left $left" >> $L
[ $left -gt 120 ] && DEMO_TIMEOUT=$left demo_mf gpt85m-hind r64/b4/g0,r32/b4/g0
finish
