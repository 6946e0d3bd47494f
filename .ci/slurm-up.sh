#!/usr/bin/env bash
# Start a real single-node SLURM for benchforge's `slurm` tests (Debian 12, root, no systemd):
# munge, MariaDB, slurmdbd (accounting: submitit and `status` read sacct), slurmctld, slurmd.
#
# What the tests rely on:
#   node "localhost" (whatever the hostname), partition "debug", 2 fake GPUs (gres), account ci;
#   QOS normal (default), long and backfill: long and normal preempt backfill by REQUEUE after
#   sending the job's --signal (GraceTime $BF_GRACE s); jobs requeue only with --requeue.
# Short requeue/scheduling delays (cred_expire=10, sched_interval=5) keep the tests fast.
# Safe to rerun: configs are rewritten only when changed, running daemons are kept (restarted
# when their config changed). Stop with .ci/slurm-down.sh (it stops only what this started).
set -euo pipefail
START=$(date +%s)
log() { echo "[slurm-up +$(( $(date +%s) - START ))s] $*"; }
fail() { echo "slurm-up: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "must run as root"

NODE=localhost
CLUSTER=ci
ACCOUNT=ci
FAKE_GPUS=2
BF_GRACE=30
DB_PASSWORD=benchforge-ci
STARTED=/run/slurm/started   # "PIDFILE NAME" per daemon started here, for slurm-down.sh

running() { # running PIDFILE NAME: the pid file names a live process called NAME
    local pid; pid=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}
poll() { # poll SECONDS COMMAND...: until COMMAND succeeds
    local left=$1; shift
    until "$@" >/dev/null 2>&1; do left=$((left - 1)); [ "$left" -gt 0 ] || return 1; sleep 1; done
}
note_started() { grep -qxF "$1" "$STARTED" 2>/dev/null || echo "$1" >> "$STARTED"; }

# --- packages (apt must not try to start services: there is no init system here)
PACKAGES="slurm-wlm slurmdbd munge mariadb-server"
if [ "$(dpkg-query -W -f='${Status}\n' $PACKAGES 2>/dev/null | grep -c 'install ok installed')" \
     != 4 ]; then
    log "installing $PACKAGES"
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PACKAGES \
        >/dev/null
fi
log "packages: slurm $(dpkg-query -W -f='${Version}' slurm-wlm)"

install -d -o munge -g munge -m 0755 /run/munge
[ -s /etc/munge/munge.key ] || runuser -u munge -- mungekey --create
install -d -o mysql -g mysql -m 0755 /run/mysqld
install -d -o slurm -g slurm -m 0755 /run/slurm /var/log/slurm /var/lib/slurm/slurmctld \
    /var/lib/slurm/slurmd

# --- configs
write_if_changed() { # write_if_changed FILE OWNER MODE < content
    local tmp; tmp=$(mktemp); cat > "$tmp"
    cmp -s "$tmp" "$1" || install -o "$2" -g "$2" -m "$3" "$tmp" "$1"
    rm -f "$tmp"
}
SHAPE=$(slurmd -C | head -1)       # what slurmd will report; RealMemory must not exceed it
TOPOLOGY=$(grep -o 'CPUs=.*ThreadsPerCore=[0-9]*' <<<"$SHAPE")
MEMORY=$(( $(grep -o 'RealMemory=[0-9]*' <<<"$SHAPE" | cut -d= -f2) * 9 / 10 ))

# Fake GPUs: SLURM 22.05 drops a gpu gres without File=, and wants device files; character
# devices with /dev/null's numbers pass (no cgroups here, so nothing is ever restricted).
for i in $(seq 0 $((FAKE_GPUS - 1))); do
    [ -c /run/slurm/fakegpu$i ] || mknod -m 0666 /run/slurm/fakegpu$i c 1 3
done
write_if_changed /etc/slurm/gres.conf root 0644 <<EOF
AutoDetect=off
NodeName=$NODE Name=gpu File=/run/slurm/fakegpu[0-$((FAKE_GPUS - 1))]
EOF

write_if_changed /etc/slurm/slurm.conf root 0644 <<EOF
# benchforge CI: single node $NODE, written by .ci/slurm-up.sh
ClusterName=$CLUSTER
SlurmctldHost=$NODE
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
# a requeued job may start again after cred_expire+1 s (default 120)
AuthInfo=cred_expire=10
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
MpiDefault=none
ReturnToService=2
KillWait=10
MinJobAge=300
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=5,sched_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# without it a job with no --mem takes the whole node's memory
DefMemPerCPU=1024
PriorityType=priority/multifactor
PriorityWeightQOS=10000
PreemptType=preempt/qos
PreemptMode=REQUEUE
# deliver the job's own --signal when preemption starts
SlurmctldParameters=preempt_send_user_signal
# requeue only jobs that ask for it (--requeue), so a missing flag fails the tests
JobRequeue=0
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageEnforce=associations,limits,qos
AccountingStorageTRES=gres/gpu
JobCompType=jobcomp/none
GresTypes=gpu
NodeName=$NODE $TOPOLOGY RealMemory=$MEMORY Gres=gpu:$FAKE_GPUS State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

write_if_changed /etc/slurm/slurmdbd.conf slurm 0600 <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
PidFile=/run/slurm/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASSWORD
StorageLoc=slurm_acct_db
EOF

stop_if_stale() { # stop_if_stale PIDFILE NAME CONFIG...: a config newer than the daemon
    local pidfile=$1 name=$2 pid; shift 2
    running "$pidfile" "$name" || return 0
    for conf in "$@"; do
        if [ "$conf" -nt "$pidfile" ]; then
            pid=$(cat "$pidfile"); log "$name: $conf changed, restarting"; kill "$pid"
            poll 30 bash -c "! kill -0 $pid" || fail "$name did not stop"
            return 0
        fi
    done
}

# --- daemons, in dependency order
if ! running /run/munge/munged.pid munged; then
    runuser -u munge -- /usr/sbin/munged
    note_started "/run/munge/munged.pid munged"
    poll 10 bash -c 'munge -n | unmunge' || fail "munged does not answer"
fi
log "munged up"

if ! running /run/mysqld/mysqld.pid mariadbd; then
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >/dev/null
    setsid /usr/sbin/mariadbd --user=mysql --pid-file=/run/mysqld/mysqld.pid \
        </dev/null >>/var/log/slurm/mariadb.log 2>&1 &
    note_started "/run/mysqld/mysqld.pid mariadbd"
    poll 60 mariadb-admin ping || fail "mariadb did not start (/var/log/slurm/mariadb.log)"
fi
mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
    ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
log "mariadb up"

stop_if_stale /run/slurm/slurmdbd.pid slurmdbd /etc/slurm/slurmdbd.conf
if ! running /run/slurm/slurmdbd.pid slurmdbd; then
    /usr/sbin/slurmdbd
    note_started "/run/slurm/slurmdbd.pid slurmdbd"
fi
poll 60 sacctmgr -n list cluster || fail "slurmdbd does not answer (/var/log/slurm)"
log "slurmdbd up"

# accounting: cluster, QOS ladder, account, root's association
acct() { sacctmgr -i "$@" >/dev/null; }
exists() { [ -n "$(sacctmgr -nP list "$1" where name="$2" format="$3" 2>/dev/null)" ]; }
exists cluster $CLUSTER cluster || acct add cluster $CLUSTER
for qos in long backfill; do exists qos $qos name || acct add qos $qos; done
acct modify qos where name=backfill set Priority=0 PreemptMode=requeue GraceTime=$BF_GRACE
acct modify qos where name=normal set Priority=10 Preempt=backfill
acct modify qos where name=long set Priority=100 Preempt=backfill
exists account $ACCOUNT account ||
    acct add account $ACCOUNT Cluster=$CLUSTER Description=ci Organization=ci
[ -n "$(sacctmgr -nP list assoc where cluster=$CLUSTER account=$ACCOUNT user=root format=user)" ] ||
    acct add user root Account=$ACCOUNT Cluster=$CLUSTER
acct modify user where name=root cluster=$CLUSTER set DefaultAccount=$ACCOUNT
acct modify account where name=$ACCOUNT cluster=$CLUSTER set QOS=normal,long,backfill \
    DefaultQOS=normal
log "accounting: cluster $CLUSTER, account $ACCOUNT, qos normal/long/backfill"

stop_if_stale /run/slurm/slurmctld.pid slurmctld /etc/slurm/slurm.conf /etc/slurm/gres.conf
if ! running /run/slurm/slurmctld.pid slurmctld; then
    /usr/sbin/slurmctld
    note_started "/run/slurm/slurmctld.pid slurmctld"
    poll 60 bash -c 'scontrol ping | grep -q UP' || fail "slurmctld not up (/var/log/slurm)"
fi
stop_if_stale /run/slurm/slurmd.pid slurmd /etc/slurm/slurm.conf /etc/slurm/gres.conf
if ! running /run/slurm/slurmd.pid slurmd; then
    /usr/sbin/slurmd -N $NODE
    note_started "/run/slurm/slurmd.pid slurmd"
fi

state() { sinfo -h -N -n $NODE -o '%T' 2>/dev/null | head -1; }
for _ in $(seq 60); do
    case "$(state)" in
        idle|mixed|allocated) break ;;
        down*|drain*) scontrol update nodename=$NODE state=resume 2>/dev/null || true ;;
    esac
    sleep 1
done
case "$(state)" in idle|mixed|allocated) ;;
    *) fail "node $NODE is '$(state)': $(scontrol show node $NODE | grep -o 'Reason=.*')" ;;
esac
log "ready: node $NODE $(state), $(sinfo -h -o '%c CPUs, %G') , partition debug"
