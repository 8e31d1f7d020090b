#!/usr/bin/env bash
# Data-parallel training on the 8 Ascend cards of one host with MindSpore's msrun launcher.
#
#   scripts/run_distribute_ascend.sh CONFIG [key=value ...]
#   e.g. scripts/run_distribute_ascend.sh training/configs/theta_plus.yaml data.root=/data/imagenet
#
# Environment: WORKERS (default 8), MASTER_PORT (default 8118), LOG_DIR (default runs/msrun_logs),
# PYTHON (default .venv/bin/python; its folder goes first on PATH because msrun starts the
# workers with the first `python` there). Rank 0 writes the run under runs/<run.name>/.
set -euo pipefail

if [[ $# -lt 1 || ! -f $1 ]]; then
  echo "usage: $0 CONFIG [key=value ...]" >&2
  exit 2
fi
config=$1
shift

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}
workers=${WORKERS:-8}
cd "$repo"
export PATH="$(dirname "$python"):$PATH"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"

exec msrun --worker_num="$workers" --local_worker_num="$workers" \
  --master_port="${MASTER_PORT:-8118}" --log_dir="${LOG_DIR:-runs/msrun_logs}" --join=True \
  training/train.py --config "$config" train.device_target=Ascend train.distributed=true "$@"
