#!/usr/bin/env bash
# The cost measurements of bench/step_cost.py on one CUDA GPU at 224x224, batch 64 and 128
# (ResNet-18 and ResNet-50; float, GDRQ and Brevitas training steps; float and folded
# inference), written as a Markdown table to $1 (default bench/RESULTS_GPU.md). About 3 minutes
# on an H200; the budget per case keeps it well under 8. Uses $PYTHON, else the repo's .venv,
# else python3; Brevitas is measured where it is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/RESULTS_GPU.md}
python=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
command=(bench/step_cost.py --device cuda --sizes 224 --batches 64,128 --budget 10)
started=$(date +%s)
table=$("$python" "${command[@]}")
{
    echo "# GDRQ on CUDA: training-step and inference cost"
    echo
    echo "Written by \`bash bench/gpu.sh\` ($(date -u +%Y-%m-%d), code $(git rev-parse --short HEAD 2>/dev/null || echo unknown)),"
    echo "which ran \`python ${command[*]}\` in $(($(date +%s) - started)) s on:"
    echo "$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')."
    echo
    echo "$table"
} >"$out"
cat "$out"
