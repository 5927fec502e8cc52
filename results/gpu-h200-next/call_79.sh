#!/bin/bash
# Session 36, the short form of call_78.sh for a small budget (carry .whl13s; CALL_LIMIT about 260): issue 12's
# 2-3-bit register-cap variants first (energy at 2 bits), then the switch part, then the compiled tests if
# time is left.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
reg_caps 150
[ $(left_s) -ge 40 ] && switch new
[ $(left_s) -ge 100 ] && gpu_tests
finish
