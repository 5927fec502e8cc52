#!/bin/bash
# Session 24. The compiled tests after this session's changes to the fused step (the instruction cuts, the byte
# draws, the triton 3.6 fix): the optimizer under torch.compile, the kernels, conversion, then `-m gpu`. ~200 s.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
timeout 150 python3 -m pytest -q -n 8 -p no:cacheprovider tests/client/test_optimizer_compile.py tests/client/test_kernels.py tests/client/test_convert.py tests/client/test_quant.py > $R/compiled.log 2>&1
step compiled-tests $?; tail -3 $R/compiled.log >> $L
timeout 150 python3 -m pytest -q -n 8 -p no:cacheprovider -m gpu tests > $R/gpu.log 2>&1
step gpu-tests $?; tail -3 $R/gpu.log >> $L
finish
