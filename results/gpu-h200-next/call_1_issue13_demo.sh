#!/bin/bash
# Prepared in session 9 (not run). Issue 13's headline, measured properly for the first time: session 9's
# call E run to the end (its NaN probe, then the shipped policy's demo on the GPU default gpt-85m at its
# stable lr, --lr 0 -> 3e-4, with the orthonormalization fix, three seeds, balanced then loss-first; a demo
# objective of 3 seeds x 3 runs took ~160-210 s on the H200). Carry .whl13 (../shared/tools/gpu-wheels.sh
# fastapi-offline tyro uvloop httptools scipy, then delete .whl13's bitsandbytes wheel: with it the set is
# over the 64 MiB a call carries).
END=${END:-560} exec bash results/gpu-h200-2026-12-04-s9/call_e.sh
