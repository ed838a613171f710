#!/usr/bin/env bash
# ./launch.sh [CONFIG] RECIPE [--key value ...]
# Runs `accelerate launch --config_file accelerate_configs/CONFIG.yaml -m medsft RECIPE ...` and prints it first.
# CONFIG defaults to single_process. Multi-node settings come from the environment:
#   NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT (or SLURM_NNODES, SLURM_NODEID under SLURM).
# NPROC sets the number of processes (default: the config's num_processes); DRY_RUN=1 prints without running.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

if [[ $# -eq 0 || "$1" == "-h" || "$1" == "--help" ]]; then
  sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
  echo "configs: $(cd "$here/accelerate_configs" && ls *.yaml | sed 's/\.yaml$//' | tr '\n' ' ')"
  exit 0
fi

config=single_process
if [[ "$1" != *.yaml && "$1" != *.yml ]]; then
  config="$1"
  shift
fi
config_file="$here/accelerate_configs/$config.yaml"
if [[ ! -f "$config_file" ]]; then
  echo "launch.sh: error: no accelerate config $config_file; choose one of: $(cd "$here/accelerate_configs" && ls *.yaml | sed 's/\.yaml$//' | tr '\n' ' ')" >&2
  exit 2
fi

args=(--config_file "$config_file")
# The DeepSpeed JSON path inside a config is relative to the repository; pass it absolute so any cwd works.
ds_json="$(awk '/deepspeed_config_file:/ {print $2}' "$config_file")"
if [[ -n "$ds_json" && "$ds_json" != /* ]]; then
  args+=(--deepspeed_config_file "$here/$ds_json")
fi
nnodes="${NNODES:-${SLURM_NNODES:-}}"
procs="${NPROC:-$(awk '/^num_processes:/ {print $2}' "$config_file")}"
if [[ -n "${NPROC:-}" ]]; then
  args+=(--num_processes "$NPROC")
fi
# accelerate gives each process OMP_NUM_THREADS=1 unless told otherwise: on a CPU-only machine that idles all
# but one core. Share this machine's cores between its processes instead (an explicit OMP_NUM_THREADS wins).
if [[ -z "${OMP_NUM_THREADS:-}" ]] && ! command -v nvidia-smi >/dev/null 2>&1; then
  local_procs=$(( ${procs:-1} / ${nnodes:-1} > 0 ? ${procs:-1} / ${nnodes:-1} : 1 ))
  args+=(--num_cpu_threads_per_process "$(( $(nproc) / local_procs > 0 ? $(nproc) / local_procs : 1 ))")
fi
if [[ -n "$nnodes" && "$nnodes" != 1 ]]; then
  args+=(--num_machines "$nnodes" --machine_rank "${NODE_RANK:-${SLURM_NODEID:-0}}")
  args+=(--main_process_ip "${MASTER_ADDR:?MASTER_ADDR must be set for multi-node runs}" --main_process_port "${MASTER_PORT:-29500}")
fi

cmd=(accelerate launch "${args[@]}" -m medsft "$@")
echo "+ ${cmd[*]}"
if [[ -n "${DRY_RUN:-}" ]]; then
  exit 0
fi
exec "${cmd[@]}"
