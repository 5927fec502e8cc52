#!/bin/bash
# Session 20, calls 10 and 11 on an H100: the prepared results/gpu-h200-next/call_16.sh with CAND=s20j51.
# Call 10's carried wheels lacked fastapi-offline (every demo's service failed to start); call 11 ran with it.
CAND=s20j51 bash results/gpu-h200-next/call_16.sh; cat $OUT/run.log
