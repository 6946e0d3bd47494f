#!/usr/bin/env bash
# Stop what .ci/slurm-up.sh started (newest first, by pid file, never by process name: other
# things may run on this machine). Jobs outlive slurmd, so they are cancelled first.
set -uo pipefail
STARTED=/run/slurm/started

running() {
    local pid; pid=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}

if running /run/slurm/slurmctld.pid slurmctld; then
    jobs=$(squeue -h -o %i)
    if [ -n "$jobs" ]; then
        # shellcheck disable=SC2086
        scancel --full $jobs
        for _ in $(seq 30); do [ -z "$(squeue -h -t R,CG,S -o %i)" ] && break; sleep 1; done
    fi
fi

[ -f "$STARTED" ] || { echo "slurm-down: nothing started by slurm-up.sh"; exit 0; }
tac "$STARTED" | while read -r pidfile name; do
    running "$pidfile" "$name" || continue
    pid=$(cat "$pidfile")
    kill -TERM "$pid"
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    echo "slurm-down: stopped $name"
done
rm -f "$STARTED"
