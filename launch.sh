#!/usr/bin/env bash
# ./launch.sh [CONFIG] RECIPE [--key value ...]
# Runs `accelerate launch --config_file accelerate_configs/CONFIG.yaml -m medsft RECIPE ...` and prints it first.
# CONFIG defaults to single_process. Multi-node settings come from the environment:
#   NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT (or SLURM_NNODES, SLURM_NODEID under SLURM).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

if [[ $# -eq 0 || "$1" == "-h" || "$1" == "--help" ]]; then
  sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'
  echo "configs: $(ls "$here/accelerate_configs" | sed 's/\.yaml$//' | tr '\n' ' ')"
  exit 0
fi

config=single_process
if [[ "$1" != *.yaml && "$1" != *.yml ]]; then
  config="$1"
  shift
fi
config_file="$here/accelerate_configs/$config.yaml"
if [[ ! -f "$config_file" ]]; then
  echo "launch.sh: error: no accelerate config $config_file; choose one of: $(ls "$here/accelerate_configs" | sed 's/\.yaml$//' | tr '\n' ' ')" >&2
  exit 2
fi

args=(--config_file "$config_file")
# accelerate gives each process OMP_NUM_THREADS=1 unless told otherwise: on a CPU-only machine that idles all
# but one core. Share the cores between the processes instead (an explicit OMP_NUM_THREADS wins).
if [[ -z "${OMP_NUM_THREADS:-}" ]] && ! command -v nvidia-smi >/dev/null 2>&1; then
  procs="$(awk '/^num_processes:/ {print $2}' "$config_file")"
  args+=(--num_cpu_threads_per_process "$(( $(nproc) / ${procs:-1} > 0 ? $(nproc) / ${procs:-1} : 1 ))")
fi
nnodes="${NNODES:-${SLURM_NNODES:-}}"
if [[ -n "$nnodes" && "$nnodes" != 1 ]]; then
  args+=(--num_machines "$nnodes" --machine_rank "${NODE_RANK:-${SLURM_NODEID:-0}}")
  args+=(--main_process_ip "${MASTER_ADDR:?MASTER_ADDR must be set for multi-node runs}" --main_process_port "${MASTER_PORT:-29500}")
fi

cmd=(accelerate launch "${args[@]}" -m medsft "$@")
echo "+ ${cmd[*]}"
exec "${cmd[@]}"
