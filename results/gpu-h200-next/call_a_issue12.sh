#!/bin/bash
# Issue 12's prepared first call: session 7's next_call.sh, unchanged (not run in session 8: no device time left).
# Carry .whl (../shared/tools/gpu-wheels.sh torchao apollo-torch flashoptim fastapi-offline tyro uvloop httptools).
exec bash results/gpu-h200-2026-12-04-s7/next_call.sh
