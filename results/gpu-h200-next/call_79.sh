#!/bin/bash
# Session 36, the short form of call_78.sh for a small budget (carry .whl13s; CALL_LIMIT about 260): issue 12's
# 2-3-bit register-cap variants first (energy at 2 bits), then the switch part, then the compiled tests if
# time is left.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
timeout 150 python3 -m mango_cli bench gpu --out $R/var --parts variants --energy-window-s 1.0 \
  --optimizers "r0/b2/g0|,r0/b2/g0|MAX_REGS=96,r0/b2/g0|MAX_REGS=128,r0/b2/g0|MAX_REGS=0,r0/b3/g0|,r0/b3/g0|MAX_REGS=96" \
  > $R/var.log 2>&1
step variants $?; cat $R/var/*.md >> $L 2>/dev/null || tail -5 $R/var.log >> $L
[ $(left_s) -ge 40 ] && switch new
[ $(left_s) -ge 100 ] && gpu_tests
finish
