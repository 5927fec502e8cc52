#!/bin/bash
# Prepared in session 25, not run. Issue 12: the r0/b4/g0 step with session 25's NF4 search (fused.NF4_SEARCH
# "cells": a cell lookup and two 8-byte table gathers instead of 15 comparisons a code; static SASS count
# 320 -> ~220 instructions a value under triton 3.6, registers 128 -> 96) against the comparisons it replaced
# ("compare", still the default: flip it if "cells" wins), beside fused AdamW and r0/b8/g0, with the step rows' energy; then the compiled NF4-search, fused
# and draws tests (the inline set/PRMT paths the interpreter does not run). ~400 s. Carry .whl13.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
# the variants part on a subset of gpu.VARIANTS: every r0/b4 row of the search knob and its baseline, and r0/b8/g0
timeout 200 python3 - > $R/var.log 2>&1 <<PY
import sys
from benchmarks import gpu
keep = {("r0/b4/g0", "{}"), ("r0/b4/g0", "{'error_feedback': False}"), ("r0/b4/g0", "{'skip_nonfinite': False}"),
        ("r0/b4/g0", "{'stochastic_rounding': False}"), ("r0/b4/g1", "{}"), ("r0/b8/g0", "{}")}
gpu.VARIANTS[:] = [v for v in gpu.VARIANTS if "NF4_SEARCH" in v[2] or (not v[2] and (v[0], str(v[1])) in keep)]
print(len(gpu.VARIANTS), "variants", flush=True)
sys.argv = ["mango", "bench", "gpu", "--out", "$R/var", "--parts", "variants"]
from mango_cli import run
run()
PY
step variants $?; cat $R/var/*.md >> $L 2>/dev/null
timeout 100 python3 -m mango_cli bench gpu --out $R/step --parts step --optimizers "AdamW (fused),r0/b8/g0,r0/b4/g0,-torch-path" --energy-window-s 0.3 > $R/step.log 2>&1
step step $?; cat $R/step/*.md >> $L 2>/dev/null
timeout 90 python3 -m pytest -q -n 8 -p no:cacheprovider tests/client/test_nf4_search.py tests/client/test_draws.py tests/client/test_fused.py \
  -k "nf4 or draws or dither or matches_torch or stochastic" > $R/tests.log 2>&1
step tests $?; tail -3 $R/tests.log >> $L
finish
