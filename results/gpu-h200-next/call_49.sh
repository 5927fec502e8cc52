#!/bin/bash
# Prepared in session 28: the next session's second call (same warm machine as call_48.sh). (1) `pytest -m gpu`
# and the fused tests compiled, (2) the paired convergence of the 4-bit second moment, factored (the default)
# against full, over three seeds (`--parts converge --seeds 3 --steps 600`; session 28's one seed: full v
# 1.4 % below AdamW's loss, factored 1.6 % above, at 1.69 against 1.14 B/param). ~450 s. Carry .whl13s.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
timeout 120 python3 -m pytest -q -n 8 -p no:cacheprovider -m gpu tests --ignore=tests/policy_service/test_fuzz.py \
  --ignore=tests/policy_service/test_hardening.py > $R/gpu-tests.log 2>&1
step gpu-tests $?; grep -E "FAILED|ERROR|passed|failed" $R/gpu-tests.log | tail -8 >> $L
timeout 90 python3 -m pytest -q -n 8 -p no:cacheprovider tests/client/test_fused.py > $R/fused-tests.log 2>&1
step fused-tests $?; grep -E "FAILED|ERROR|passed|failed" $R/fused-tests.log | tail -8 >> $L
left=$(( ${CALL_LIMIT:-540} - ($(date +%s)-t0) - 10 )); echo "left $left" >> $L
timeout $left python3 -m mango_cli bench gpu --out $R/conv --parts converge --seeds 3 --steps 600 \
  --optimizers "AdamW (fused),r0/b4/g0,-torch-path,-g0.5,-unchecked,-no-EF" > $R/conv.log 2>&1
step converge $?; cat $R/conv/*.md >> $L 2>/dev/null
finish
