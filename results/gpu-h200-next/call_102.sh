#!/bin/bash
# Session 44 (carry .whl13p; CALL_LIMIT <= 560): the steady fused step replayed from a CUDA graph
# (client/compression/step_graph.py, fused.STEP_GRAPH). 1. the compiled tests (test_step_graph's replayed =
# eager value by value, the failed capture; test_fused with the step scalars now read from a device buffer);
# 2. the A/B of the graph in the variants part (step_ms, host_ms, energy; 1 s windows); 3. --parts profile
# (host ms against device ms); 4. the grid with 2 s paired windows (host_ms column); 5. the first step into
# r4/b8/g0 (step_probe --switch, call 99's 75 ms); 6. the 1B rows in what is left.
WHL=.whl13p source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
lscpu | grep -E "Model name|^CPU\(s\)|MHz" >> $L
timeout 150 python3 -m pytest -q -n 8 -p no:cacheprovider -m gpu tests/client/test_step_graph.py tests/client/test_fused.py \
  tests/client/test_kernels.py > $R/gpu-tests.log 2>&1
step gpu-tests-core $?; grep -E "FAILED|ERROR|passed|failed|Error" $R/gpu-tests.log | tail -12 >> $L
timeout 100 python3 -m pytest -q -n 8 -p no:cacheprovider tests/client/test_fused.py tests/client/test_step_graph.py \
  > $R/fused-tests.log 2>&1
step fused-tests $?; grep -E "FAILED|ERROR|passed|failed" $R/fused-tests.log | tail -8 >> $L
G="r0/b8/g0|,r0/b8/g0|STEP_GRAPH=False,r0/b4/g1|,r0/b4/g1|STEP_GRAPH=False,r8/b2/g0.25|,r8/b2/g0.25|STEP_GRAPH=False"
G="$G,r4/b8/g0|,r4/b8/g0|STEP_GRAPH=False,r32/b32/g1|,r32/b32/g1|STEP_GRAPH=False,r64/b8/g0|,r64/b8/g0|STEP_GRAPH=False"
var graph "$G"
timeout 60 python3 -m mango_cli bench gpu --out $R/prof --parts profile \
  --optimizers "=torch AdamW (fused),=MangoAdamW r0/b8/g0,=MangoAdamW r4/b8/g0,=MangoAdamW r32/b32/g1" > $R/prof.log 2>&1
step profile $?; cat $R/prof/*.md >> $L 2>/dev/null
grid2
timeout 45 python3 -m benchmarks.step_probe --setting r0/b8/g0 --switch r4/b8/g0 > $R/probe-switch.log 2>&1
step probe-switch $?; grep -E "ms|Self CPU total|Self CUDA total" $R/probe-switch.log | head -12 >> $L
b1_rows "r0/b8/g0 r0/b4/g0 r4/b8/g0 r32/b32/g1 r64/b16/g1"
finish
