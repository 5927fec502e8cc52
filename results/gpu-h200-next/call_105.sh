#!/bin/bash
# Session 44, the last of the session's device time (carry .whl13p; CALL_LIMIT ~150), for an H200 if one
# comes: a covering subset of the grid (every rank, width and gamma kind) by exact names, 1 s paired windows.
WHL=.whl13p source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
lscpu | grep -E "Model name|^CPU\(s\)" >> $L
b="=torch AdamW (fused)"
for s in r0/b8/g0 r0/b4/g0 "r0/b4/g0 no-EF" r0/b2/g0 r0/b4/g1 r0/b8/g0.5 r1/b8/g0 r4/b8/g0 r8/b2/g0.25 r16/b3/g0.75 \
  r32/b32/g1 r64/b8/g0 r64/b16/g1; do b="$b,=MangoAdamW $s"; done
timeout $(left_s) python3 -m mango_cli bench gpu --out $R/grid --parts step --energy-window-s 1.0 --optimizers "$b" > $R/grid.log 2>&1
step grid $?; cat $R/grid/*.md >> $L 2>/dev/null || grep -E "^\{" $R/grid.log | tail -16 >> $L
finish
