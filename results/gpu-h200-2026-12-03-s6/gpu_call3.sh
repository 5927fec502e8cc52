#!/bin/bash
# GPU call 3 (session 6, 2026-12-03): the final code: compiled tests of the refresh / conversion paths, the
# switch costs, the grid with the peers in the same run, the 1B rows, and Nsight Compute on the rank-0 8-bit
# and 2-bit matrix kernels (where their time goes: for the next session).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
L=$OUT/run.log; t0=$(date +%s); END=520
left() { echo $(( END - ($(date +%s)-t0) )); }
step() { local cap=$1; shift; local l=$(left); local t=$(( cap < l ? cap : l )); if [ $t -lt 15 ]; then echo "skip $*" >> $L; return; fi; timeout $t "$@"; echo "rc=$? t=$(( $(date +%s)-t0 )) :: $*" >> $L; }
date -u > $L
step 120 python3 -m pytest -q -p no:cacheprovider -rf --tb=short tests/client/test_fused.py tests/client/test_refresh.py tests/client/test_convert.py tests/client/test_lowrank.py > $OUT/tests.log 2>&1
step 45 python3 -m mango_cli bench gpu --out /tmp/sw --parts switch > $OUT/switch.log 2>&1
# Triton's JIT at a setting's first use: the same 20 steps with an empty kernel cache, then a warm one
for c in cold warm; do
  step 40 env TRITON_CACHE_DIR=/tmp/tc-jit python3 -m benchmarks.step_probe --setting r16/b3/g0.75 --steps 20 > $OUT/jit-$c.log 2>&1
done
step 200 python3 -m mango_cli bench gpu --out /tmp/g --parts step --energy-window-s 0.5 --optimizers "torch AdamW,bnb,torchao,FlashOptim,GaLore,APOLLO,MangoAdamW r,-torch-path" > $OUT/step.log 2>&1
step 100 python3 -m mango_cli bench gpu --out /tmp/b1 --model 1b --parts step --energy-window-s 0.5 --optimizers "torch AdamW (fused),MangoAdamW r0/b8/g0,MangoAdamW r4/b8/g0,MangoAdamW r32/b4/g0,MangoAdamW r64/b8/g0,-torch-path,-no-EF" > $OUT/b1.log 2>&1
for s in r0/b8/g0 r0/b2/g0; do
  step 40 ncu --kernel-name matrix_step_kernel --launch-skip 12 --launch-count 1 --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy --section LaunchStats python3 -m benchmarks.step_probe --setting $s --steps 8 > $OUT/ncu-${s//\//_}.log 2>&1
done
cat /tmp/sw/*.md /tmp/g/step-gpt2.md /tmp/b1/step-1b.md > $OUT/tables.md 2>/dev/null; cp /tmp/g/step-gpt2.json /tmp/sw/*.json $OUT/ 2>/dev/null
tail -4 $OUT/tests.log >> $L
ls -la $OUT >> $L
