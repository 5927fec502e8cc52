#!/bin/bash
# Prepared in session 12 (not run). Issue 13: what projection really costs on the demo's GPU job under
# memory-first, where the v3 default (s11c) played r16/b8/g0 and lost to r0/b8/g0 by 14 % (session 12, call 4).
# (a) The surrogate's best static under memory-first on the GPU workloads, r32/b4/g1, as the demo's static run
# (is the surrogate's choice right on the real job?); (b) r64/b4/g0 likewise; 2 seeds each, ~190 s a preset on
# a fresh machine (profile + warm-up + 6 runs). (c) The compiled kernel tests of the final core (session 12's
# trimmed early-loads test never ran on the GPU), then `pytest -m gpu` over the tree. Carry .whl13.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl13/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p $R; L=$OUT/run.log; date -u > $L; t0=$(date +%s)
timeout 150 python3 -m pytest -q -n 4 -p no:cacheprovider tests/client/test_fused.py tests/client/test_convert.py \
  tests/client/test_quant.py tests/client/test_kernels.py tests/client/test_lowrank.py > $R/tests.log 2>&1
echo "rc=$? tests t=$(( $(date +%s)-t0 ))" >> $L; tail -3 $R/tests.log >> $L
# the gpu-marked tests outside those files (session 12 ran none of them on its final code)
timeout 60 python3 -m pytest -q -p no:cacheprovider -m gpu tests/ --ignore=tests/client/test_fused.py \
  --ignore=tests/client/test_convert.py --ignore=tests/client/test_quant.py --ignore=tests/client/test_kernels.py \
  --ignore=tests/client/test_lowrank.py > $R/tests_gpu_marked.log 2>&1
echo "rc=$? pytest -m gpu t=$(( $(date +%s)-t0 ))" >> $L; tail -3 $R/tests_gpu_marked.log >> $L
for s in r32/b4/g1 r64/b4/g0; do
  n=${s//\//-}
  timeout 190 python3 -m mango_cli demo --seeds 2 --objective memory-first --static-setting $s --no-progress \
    --out-dir $R/demo-mf-$n > $R/demo-mf-$n.log 2>&1
  echo "rc=$? demo memory-first static $s t=$(( $(date +%s)-t0 ))" >> $L
  grep -E "verdict|^\| (adaptive|adamw|static|[0-9]|mean)" $R/demo-mf-$n.log >> $L
done
rm -f $R/demo-*/*.png
tar czf $OUT/logs.tgz -C $R .
