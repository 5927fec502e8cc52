#!/bin/bash
# Prepared in session 13 (not run). Issue 12: do stochastic rounding's hash draws (fused.DRAWS = "hash", a
# variant; Philox-7 is the default) make the 8-bit step faster on the H200? Static code says 198 -> 183
# instructions a value at r0/b8/g0 and 237 -> 207 at r0/b8/g0.5 (modelled, BENCHMARKS.md session 13).
# (a) the draws' tests and the fused-vs-torch tests compiled; (b) the variants part for the 8-bit rank-0 rows
# (every VARIANTS row of r0/b8/g0 and r0/b8/g0.5, the hash rows among them) and r4/b8/g0, beside fused AdamW in
# the same run. Carry .whl13. ~300 s.
source results/gpu-h200-next/preamble.sh
timeout 100 python3 -m pytest -q -n 4 -p no:cacheprovider tests/client/test_draws.py tests/client/test_fused.py \
  > $R/tests.log 2>&1
step tests $?; tail -3 $R/tests.log >> $L
timeout 200 python3 -m mango_cli bench gpu --out $R/var --parts variants --optimizers "r0/b8/g0,r4/b8/g0" \
  > $R/variants.log 2>&1
step variants $?; cat $R/var/*.md >> $L 2>/dev/null || grep "step_ms" $R/variants.log >> $L
finish
