#!/bin/bash
# GPU call 2: H200 cost profiles (compile-free), compiled fused/refresh tests, step bench (batched refresh), kernel profile, 1B rows.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
L=$OUT/run.log; t0=$(date +%s); END=580
left() { echo $(( END - ($(date +%s)-t0) )); }
step() { local cap=$1; shift; local l=$(left); local t=$(( cap < l ? cap : l )); if [ $t -lt 15 ]; then echo "skip $*" >> $L; return; fi; timeout $t "$@"; echo "rc=$? t=$(( $(date +%s)-t0 )) :: $*" >> $L; }
date -u > $L
step 100 python3 -m mango_cli profile --model gpt-85m --device cuda --batch-size 16 --seq-len 256 --force --out $OUT/h200-gpt85m.json >> $OUT/prof.log 2>&1
step 100 python3 -m mango_cli profile --model lm-medium --device cuda --batch-size 32 --seq-len 256 --force --out $OUT/h200-lm-medium.json >> $OUT/prof.log 2>&1
step 200 python3 -m mango_cli bench gpu --out /tmp/g --parts step --energy-window-s 0.8 --optimizers "torch AdamW,MangoAdamW r,bnb,FlashOptim,-torch-path" >> $OUT/bench.log 2>&1
step 120 python3 -m pytest -q -p no:cacheprovider tests/client/test_fused.py tests/client/test_refresh.py tests/client/test_optimizer.py tests/client/test_kernels.py -k "fused or refresh or rotation or layouts or generator or kernel or quant or nf4 or register" > $OUT/tests.log 2>&1
step 70 python3 -m mango_cli bench gpu --out /tmp/sw --parts switch >> $OUT/bench.log 2>&1
MANGO_NF4_GATHER=1 TRITON_CACHE_DIR=/tmp/tc-gather step 90 python3 -m mango_cli bench gpu --out /tmp/g2 --parts step --energy-window-s 0.8 --optimizers "torch AdamW (fused),MangoAdamW r0/b4,-torch-path" >> $OUT/bench.log 2>&1
step 200 python3 -m mango_cli bench gpu --out /tmp/b1 --model 1b --parts step --energy-window-s 0.8 --optimizers "torch AdamW (fused),MangoAdamW r0/b8/g0,MangoAdamW r0/b16/g0,MangoAdamW r4/b8/g0,MangoAdamW r16/b16/g0,MangoAdamW r0/b4/g0,MangoAdamW r64/b8/g0,-torch-path,-g0." >> $OUT/bench.log 2>&1
step 80 python3 -m mango_cli bench gpu --out /tmp/p --parts profile --step-iters 10 --optimizers "torch AdamW (fused),MangoAdamW r4/b8/g0,MangoAdamW r0/b4/g0,MangoAdamW r64/b8/g0,-torch-path" >> $OUT/bench.log 2>&1
cat /tmp/sw/switch.md /tmp/g/step.md /tmp/g2/step.md /tmp/p/profile.md /tmp/b1/step.md > $OUT/tables.md 2>/dev/null; cp /tmp/g/step.json $OUT/step-gpt2.json; ls -la $OUT >> $L
