#!/bin/bash
# Session 12, H200 call 3 (the final core: fused.EARLY_LOADS at 8 bits, caps 96 / 128). Issue 12: the compiled
# kernel tests; the grid (every Mango row of the step part beside fused AdamW, one run); the early-loads
# variants against loads where first used; the 1B rows of AdamW and r0/b8/g0. Carry .whl13.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl13/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p $R; L=$OUT/run.log; date -u > $L; t0=$(date +%s)
timeout 150 python3 -m pytest -q -n 4 -p no:cacheprovider tests/client/test_fused.py tests/client/test_convert.py \
  tests/client/test_quant.py tests/client/test_kernels.py tests/client/test_lowrank.py > $R/tests.log 2>&1
echo "rc=$? tests t=$(( $(date +%s)-t0 ))" >> $L; tail -4 $R/tests.log >> $L
timeout 100 python3 -m mango_cli bench gpu --out $R/grid --parts step --energy-window-s 0.3 --optimizers "torch AdamW,MangoAdamW r,-torch-path" > $R/grid.log 2>&1
echo "rc=$? grid t=$(( $(date +%s)-t0 ))" >> $L; cat $R/grid/*.md >> $L 2>/dev/null
timeout 80 python3 -m mango_cli bench gpu --out $R/var --parts variants --optimizers "r0/b8,r0/b16,r4/b8,r64/b8" > $R/variants.log 2>&1
echo "rc=$? variants t=$(( $(date +%s)-t0 ))" >> $L; cat $R/var/*.md >> $L 2>/dev/null || grep "step_ms" $R/variants.log >> $L
left=$(( 400 - ($(date +%s)-t0) )); echo "left $left" >> $L
[ $left -gt 60 ] && timeout $left python3 -m mango_cli bench gpu --out $R/g1b --parts step --model 1b --energy-window-s 0.3 \
  --optimizers "torch AdamW,MangoAdamW r0/b8/g0,-torch-path,-g0.5" > $R/step1b.log 2>&1
echo "rc=$? 1b t=$(( $(date +%s)-t0 ))" >> $L; cat $R/g1b/*.md >> $L 2>/dev/null; tail -3 $R/step1b.log >> $L
tar czf $OUT/logs.tgz -C $R .
