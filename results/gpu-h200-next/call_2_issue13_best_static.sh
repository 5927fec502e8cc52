#!/bin/bash
# Prepared in session 13 (not run). Issue 13: is the surrogate's best static under memory-first right on the
# real job? The held-out GPU workload's best static is r32/b8/g1, the training workloads' r64/b4/g0 and
# r32/b4/g1 (BENCHMARKS.md, session 13). The demo's static run is each in turn; its adaptive run is the default
# again (a second pair of seeds). Then s13h14 (results/policy-s13h14: trained with --depth 0 0.8; in the surrogate
# it beats r0/b8/g0 under memory-first on the held-out GPU workload by 16 %, s13d6 ties; not shipped because its
# CPU validation score is 0.0007 lower) against r0/b8/g0. Carry .whl13. ~580 s: drop a static run if short.
source results/gpu-h200-next/preamble.sh
demo_mf r32-b8-g1 r32/b8/g1
demo_mf r64-b4-g0 r64/b4/g0
demo_mf s13h14 r0/b8/g0 --policy s13h14 --policy-dir results/policy-s13h14
finish
