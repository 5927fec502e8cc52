#!/bin/bash
# GPU call 2 (session 7; device time left for one call): the factored second moment in column strips
# (FACTOR_ITERS tiles a program, one column atomic per strip): its variants (tiles walked, register caps),
# compiled tests of the changed kernel and of the conversion test's GPU tolerance, where a setting change's
# time goes (step_probe --switch), the grid's step table (Mango beside fused AdamW), and the shipped policy's
# demo on gpt-85m (balanced, loss-first) with every kernel compiled by the profile before training.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p $R; L=$OUT/run.log; t0=$(date +%s); END=540
left() { echo $(( END - ($(date +%s)-t0) )); }
step() { local cap=$1; shift; local l=$(left); local t=$(( cap < l ? cap : l )); if [ $t -lt 15 ]; then echo "skip $*" >> $L; return; fi; timeout $t "$@"; echo "rc=$? t=$(( $(date +%s)-t0 )) :: $*" >> $L; }
date -u > $L
step 85 python3 -m mango_cli bench gpu --out /tmp/v --parts variants --optimizers "r0/b2,r0/b3,r0/b4,r8/b4,r32/b4,r0/b8" > $R/variants.log 2>&1
cat /tmp/v/variants.md >> $L
step 90 python3 -m pytest -q -p no:cacheprovider -rf --tb=short tests/client/test_convert.py tests/client/test_fused.py > $R/tests.log 2>&1
tail -6 $R/tests.log >> $L
for sw in "r0/b8/g0 r4/b8/g0" "r64/b16/g0 r0/b4/g1"; do set -- $sw
  step 25 python3 -m benchmarks.step_probe --setting $1 --switch $2 > $R/switch-probe-${1//\//_}.log 2>&1
done
step 110 python3 -m mango_cli bench gpu --out /tmp/g --parts step --energy-window-s 0.4 --optimizers "torch AdamW (fused),MangoAdamW r,-torch-path" > $R/step.log 2>&1
cat /tmp/g/step-gpt2.md >> $L 2>/dev/null; cp /tmp/v/variants.json /tmp/g/step-gpt2.json $R/ 2>/dev/null
for obj in balanced loss-first; do
  step 95 python3 -m mango_cli demo --out-dir /tmp/d-$obj --no-progress --objective $obj > $R/demo-$obj.log 2>&1
  { echo "=== demo gpt-85m $obj (shipped policy)"; cat /tmp/d-$obj/summary.md 2>/dev/null; echo; } >> $L
done
tar czf $OUT/logs.tgz -C $R .
