#!/usr/bin/env bash
# Go on with the long measurements of docs/tuning.md in the background, where they stopped:
# the tuning study, then the defaults check, each as two processes of one thread (the two
# cores), while a third commits their kept outputs every 5 minutes. Both resume from what is
# committed, so a fresh machine (after scripts/setup.sh) continues with this one command:
#
#     setsid nohup bash scripts/long_runs.sh > runs/long-runs.log 2>&1 &
#
# The study runs at the commit it has run at since its retry fix (STUDY_COMMIT; training is
# unchanged since), from a worktree in runs/, so every trial of it runs the same code; the
# check runs at this checkout. Logs: runs/long-runs-<stage>-<1|2>.log (progress bars use \r).
set -euo pipefail
cd "$(dirname "$0")/.."
STUDY_COMMIT=${STUDY_COMMIT:-402498f}
PY="$PWD/.venv/bin/python"
mkdir -p runs

commit_kept() {  # every 5 minutes, whatever the runs kept since (nothing new: no commit)
  while sleep 300; do
    for kept in docs/tuning-study docs/defaults-check; do
      [ -d "$kept" ] || continue
      git add "$kept" && git commit -qm "long runs: kept outputs after a run ($kept)" \
        -- "$kept" > /dev/null 2>&1 || true
    done
  done
}

pair() {  # pair STAGE CODE_DIR ARGS..: two processes of one command, both to their end
  local stage=$1 code=$2 pids=()
  shift 2
  for i in 1 2; do
    OMP_NUM_THREADS=1 PYTHONPATH="$code" nice -n 5 "$PY" "$@" \
      >> "runs/long-runs-$stage-$i.log" 2>&1 &
    pids+=($!)
    sleep 20  # the first builds the chunk's task; the second then finds it
  done
  for pid in "${pids[@]}"; do wait "$pid" || echo "$stage: a process ended with status $?"; done
}

commit_kept &
committer=$!
trap 'kill $committer 2> /dev/null || true' EXIT

code=runs/study-code
[ -d "$code" ] || git worktree add -q --detach "$code" "$STUDY_COMMIT"
pair study "$PWD/$code" "$PWD/$code/benchmarks/tuning_study.py" \
  --out runs/tuning-study --keep docs/tuning-study
pair check "$PWD" benchmarks/defaults_check.py --study docs/tuning-study \
  --out runs/defaults-check --keep docs/defaults-check
