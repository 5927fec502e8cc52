#!/bin/bash
# Session 24. Issue 12 on an H200: the r0/b8 step after this session's instruction cuts (158 a value, from
# 198) and the byte draws (DRAWS=philox8, 138), beside fused AdamW in the same run. ~60 s. Carry .whl13.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
timeout 150 python3 -m mango_cli bench gpu --out $R/var --parts variants --optimizers "r0/b8/g" > $R/var.log 2>&1
step variants $?; cat $R/var/*.md >> $L 2>/dev/null
timeout 100 python3 -m mango_cli bench gpu --out $R/step --parts step --optimizers "AdamW (fused),r0/b8/g0,r0/b4/g0,r0/b16/g0,-torch-path" --energy-window-s 0.3 > $R/step.log 2>&1
step step $?; cat $R/step/*.md >> $L 2>/dev/null
finish
