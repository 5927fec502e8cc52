#!/bin/bash
# Prepared in session 9 (not run). Issue 12: the grid with the peers in one run (session 9's call A was cut
# at r8/b2 by a 210 s cap: the peers' compilation takes most of it, so they get their own command), the
# setting changes after the vectorized plan tables (95a3fa9), and the compiled kernel tests after the
# orthonormalization change. Carry .whl (../shared/tools/gpu-wheels.sh torchao apollo-torch flashoptim
# fastapi-offline tyro uvloop httptools, plus pytest-xdist and execnet).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p $R; L=$OUT/run.log; t0=$(date +%s); END=${END:-560}
left() { echo $(( END - ($(date +%s)-t0) )); }
step() { local cap=$1; shift; local l=$(left); local t=$(( cap < l ? cap : l )); if [ $t -lt 15 ]; then echo "skip $*" >> $L; return; fi; timeout $t "$@"; echo "rc=$? t=$(( $(date +%s)-t0 )) :: $*" >> $L; }
date -u > $L
step 120 python3 -m pytest -q -n 4 -p no:cacheprovider -rf --tb=short tests/client/test_fused.py tests/client/test_convert.py tests/client/test_lowrank.py tests/client/test_comm_hook.py > $R/tests.log 2>&1
tail -4 $R/tests.log >> $L
step 60 python3 -m mango_cli bench gpu --out /tmp/sw --parts switch > $R/switch.log 2>&1
cat /tmp/sw/*.md >> $L 2>/dev/null
step 200 python3 -m mango_cli bench gpu --out /tmp/g --parts step --energy-window-s 0.3 --optimizers "torch AdamW,MangoAdamW r,-torch-path" > $R/step.log 2>&1
cat /tmp/g/step-gpt2.md >> $L 2>/dev/null
step 170 python3 -m mango_cli bench gpu --out /tmp/p --parts step --energy-window-s 0.3 --optimizers "torch AdamW (fused),bnb,torchao,FlashOptim,GaLore,APOLLO" > $R/peers.log 2>&1
cat /tmp/p/step-gpt2.md >> $L 2>/dev/null
tar czf $OUT/logs.tgz -C $R .
