#!/bin/bash
# Run oe.fit in every task of the current SLURM allocation:
#   slurm/launch.sh RUN_DIR [oe.fit arguments ...]
# Called by the sbatch templates, from the repository root. Lightning reads each task's rank and
# the world from SLURM's environment (SLURMEnvironment); devices and nodes are taken from the
# allocation so that they always agree with it. Everything the run writes lands in RUN_DIR:
# metrics (csv/), W&B (wandb/), checkpoints/, one log per task (logs/), finished.json.
# The python that runs is $OE_PYTHON (default: python on PATH).
set -euo pipefail
if [[ $# -lt 1 || -z "${SLURM_JOB_ID:-}" ]]; then
    echo "usage (inside an sbatch job): slurm/launch.sh RUN_DIR [oe.fit arguments ...]" >&2
    exit 2
fi
run_dir=$1
shift
mkdir -p "$run_dir/logs"
nodes=${SLURM_JOB_NUM_NODES:-1}
per_node=${SLURM_NTASKS_PER_NODE:-$(( ${SLURM_NTASKS:-1} / nodes ))}
per_node=${per_node%%(*}  # "2(x3)" on heterogeneous allocations: the first count
# One thread pool per task, sized to its CPUs, instead of every task using every core.
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
echo "$(date -u +%FT%TZ) job ${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}${SLURM_ARRAY_TASK_ID:+_$SLURM_ARRAY_TASK_ID}" \
     "restart ${SLURM_RESTART_COUNT:-0}: $nodes node(s) x $per_node task(s) -> $run_dir"
# The run is named after its folder unless the arguments name it; later arguments win.
exec srun --kill-on-bad-exit=1 --open-mode=append --output="$run_dir/logs/%j-task%t.log" \
    "${OE_PYTHON:-python}" -m oe.fit --run_name "$(basename "$run_dir")" "$@" \
    --run_dir "$run_dir" --trainer.num_nodes "$nodes" --trainer.devices "$per_node"
