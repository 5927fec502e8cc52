#!/bin/bash
# Prepared in sessions 12-13 (not run: no device time was left in session 13). Carry .whl13. ~420 s.
# (session 14: test_fuzz/test_hardening import schemathesis/jsonschema, which .whl13 lacks: ignored here)
# (a) The compiled kernel tests of the final core (session 12's trimmed early-loads test never ran on the GPU),
#     then `pytest -m gpu` over the rest of the tree.
# (b) Issue 13's floor on the H200 under memory-first for the default shipped in session 13: the demo's static
#     run is r0/b8/g0, the floor (session 12: s11c played r16/b8/g0 and lost by 14 %).
source results/gpu-h200-next/preamble.sh
timeout 150 python3 -m pytest -q -n 4 -p no:cacheprovider tests/client/test_fused.py tests/client/test_convert.py \
  tests/client/test_quant.py tests/client/test_kernels.py tests/client/test_lowrank.py > $R/tests.log 2>&1
step tests $?; tail -3 $R/tests.log >> $L
timeout 60 python3 -m pytest -q -p no:cacheprovider -m gpu tests/ --ignore=tests/client/test_fused.py \
  --ignore=tests/client/test_convert.py --ignore=tests/client/test_quant.py --ignore=tests/client/test_kernels.py \
  --ignore=tests/client/test_lowrank.py --ignore=tests/policy_service/test_fuzz.py \
  --ignore=tests/policy_service/test_hardening.py > $R/tests_gpu_marked.log 2>&1
step "pytest -m gpu" $?; tail -3 $R/tests_gpu_marked.log >> $L
demo_mf floor r0/b8/g0
finish
