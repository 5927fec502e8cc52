#!/bin/bash
# Session 43, for the next session's first call (carry .whl13p; CALL_LIMIT <= 560), best on an H200.
# 1. the compiled tests (session 43's whole-vector mark change is new on a GPU); 2. the host of this machine
# (lscpu) and `--parts profile` (host ms a step against device ms: call 99's host made the projected rows
# host-bound); 3. the first step into r4/b8/g0 (75 ms in call 99, 7 ms in call 91): step_probe --switch's
# host and device tables; 4. the switch part with pinned and plain uploads, twice each (session 41 read the
# same ~70 ms first step in two pinned runs and no plain one: s41/switch_ab.py); 5. the grid with 2 s paired
# windows; 6. the 1B rows in what is left.
WHL=.whl13p source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
lscpu | grep -E "Model name|^CPU\(s\)|MHz" >> $L
gpu_tests
timeout 60 python3 -m mango_cli bench gpu --out $R/prof --parts profile \
  --optimizers "=torch AdamW (fused),=MangoAdamW r0/b8/g0,=MangoAdamW r4/b8/g0,=MangoAdamW r32/b32/g1" > $R/prof.log 2>&1
step profile $?; cat $R/prof/*.md >> $L 2>/dev/null
timeout 60 python3 -m benchmarks.step_probe --setting r0/b8/g0 --switch r4/b8/g0 > $R/probe-switch.log 2>&1
step probe-switch $?; grep -E "ms|Self CPU total|Self CUDA total" $R/probe-switch.log | head -12 >> $L
timeout 100 python3 results/gpu-h200-next/s41/switch_ab.py $R/switch-ab > $R/switch-ab.log 2>&1
step switch-ab $?; for f in $R/switch-ab/*/switch.md; do echo "$f" >> $L; grep "^| r" "$f" >> $L; done
grid2
b1_rows "r0/b8/g0 r0/b4/g0 r0/b2/g0 r0/b4/g1 r4/b8/g0 r32/b32/g1 r64/b16/g1"
finish
