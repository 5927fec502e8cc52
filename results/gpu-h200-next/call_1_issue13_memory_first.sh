#!/bin/bash
# Prepared in sessions 12-13 (not run: no device time was left in session 13). Carry .whl13. ~420 s.
# (a) The compiled kernel tests of the final core (session 12's trimmed early-loads test never ran on the GPU),
#     then `pytest -m gpu` over the rest of the tree.
# (b) Issue 13's floor on the H200 under memory-first for the default shipped in session 13: the demo's static
#     run is r0/b8/g0, the floor (session 12: s11c played r16/b8/g0 and lost by 14 %). 2 seeds, ~190 s on a
#     fresh machine (profile + warm-up + 6 runs).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl13/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p $R; L=$OUT/run.log; date -u > $L; t0=$(date +%s)
timeout 150 python3 -m pytest -q -n 4 -p no:cacheprovider tests/client/test_fused.py tests/client/test_convert.py \
  tests/client/test_quant.py tests/client/test_kernels.py tests/client/test_lowrank.py > $R/tests.log 2>&1
echo "rc=$? tests t=$(( $(date +%s)-t0 ))" >> $L; tail -3 $R/tests.log >> $L
timeout 60 python3 -m pytest -q -p no:cacheprovider -m gpu tests/ --ignore=tests/client/test_fused.py \
  --ignore=tests/client/test_convert.py --ignore=tests/client/test_quant.py --ignore=tests/client/test_kernels.py \
  --ignore=tests/client/test_lowrank.py > $R/tests_gpu_marked.log 2>&1
echo "rc=$? pytest -m gpu t=$(( $(date +%s)-t0 ))" >> $L; tail -3 $R/tests_gpu_marked.log >> $L
timeout 190 python3 -m mango_cli demo --seeds 2 --objective memory-first --static-setting r0/b8/g0 --no-progress \
  --out-dir $R/demo-mf-floor > $R/demo-mf-floor.log 2>&1
echo "rc=$? demo memory-first static r0/b8/g0 t=$(( $(date +%s)-t0 ))" >> $L
grep -E "verdict|^\| (adaptive|adamw|static|[0-9]|mean)" $R/demo-mf-floor.log >> $L
rm -f $R/demo-*/*.png
tar czf $OUT/logs.tgz -C $R .
