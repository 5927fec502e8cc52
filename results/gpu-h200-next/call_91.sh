#!/bin/bash
# Session 41, call 91 (carry .whl13p; CALL_LIMIT <= 560): where the missed energy rows spend their step, and
# whether the pinned uploads helped a setting change.
# 1. the switch part with pinned uploads and plain copies, A B A B in one process (s41/switch_ab.py);
# 2. `--parts profile` on AdamW and the rows that miss the energy goal: per-kernel device time;
# 3. `--parts tune-proj`: the projected launches' tiles and pipeline stages at ranks 8 and 64 (no refresh);
# 4. variants: rank 64 with and without the refresh, 2 s windows.
WHL=.whl13p source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
timeout 150 python3 results/gpu-h200-next/s41/switch_ab.py $R/switch-ab > $R/switch-ab.log 2>&1
step switch-ab $?; for f in $R/switch-ab/*/switch.md; do echo "$f" >> $L; tail -6 $f >> $L; done
MISSED="torch AdamW (fused),r64/b8/g0,r0/b2/g0,r0/b4/g1,r32/b32/g1,r0/b8/g0,-torch-path,-unchecked,-full-v,-nearest,-factored,-g0.5,-no-EF,-nf4,-stochastic"
timeout 120 python3 -m mango_cli bench gpu --out $R/prof --parts profile --optimizers "$MISSED" > $R/prof.log 2>&1
step profile $?; cat $R/prof/*.md >> $L 2>/dev/null || tail -5 $R/prof.log >> $L
timeout 150 python3 -m mango_cli bench gpu --out $R/tune --parts tune-proj > $R/tune.log 2>&1
step tune-proj $?; cat $R/tune/*.md >> $L 2>/dev/null || tail -5 $R/tune.log >> $L
left=$(left_s); [ $left -ge 30 ] && timeout $left python3 -m mango_cli bench gpu --out $R/var --parts variants --energy-window-s 2.0 \
  --optimizers "r64/b8/g0|,r64/b8/g0|refresh_every=10000,r32/b32/g1|,r32/b32/g1|refresh_every=10000" > $R/var.log 2>&1
step variants $?; cat $R/var/*.md >> $L 2>/dev/null || tail -5 $R/var.log >> $L
finish
