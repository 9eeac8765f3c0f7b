#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the workflow's SLURM tests and for trying
# profiles/slurm before going to a real cluster.
#
#   scripts/slurm_cluster.sh start    # install slurm-wlm + munge if missing, write the config, start
#   scripts/slurm_cluster.sh status   # daemons, node state, queue
#   scripts/slurm_cluster.sh stop     # stop the daemons this script started
#
# Needs root (Debian/Ubuntu, apt-get). `start` is idempotent: a running cluster is left as is.
# What works here and why (see ../shared/STACK.md): slurm.conf must sit at /etc/slurm/slurm.conf
# (the `srun` the Snakemake SLURM plugin runs inside each job reads the default path), there is no
# slurmdbd, so sacct has nothing to say and jobs are followed with squeue; MinJobAge=86400 keeps
# finished jobs visible to squeue.
#
# Environment: PAIRFACTORY_SLURM_DIR (state, spool, logs; default /var/tmp/pairfactory-slurm),
# PAIRFACTORY_SLURM_PARTITION (default "debug").
set -euo pipefail

STATE_DIR="${PAIRFACTORY_SLURM_DIR:-/var/tmp/pairfactory-slurm}"
PARTITION="${PAIRFACTORY_SLURM_PARTITION:-debug}"
CONF=/etc/slurm/slurm.conf
HOST="$(hostname -s)"
CTLD_PID="$STATE_DIR/slurmctld.pid"
SLURMD_PID="$STATE_DIR/slurmd.pid"
MUNGE_PID="$STATE_DIR/munged.pid"

log() { echo "slurm_cluster: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

need_root() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and starts system daemons)"
}

# True when the pid in file $1 is a live process.
alive() {
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
        return 0
    fi
    command -v apt-get >/dev/null || die "slurm-wlm/munge missing and apt-get not found: install SLURM and munge by hand"
    log "installing slurm-wlm and munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >&2
}

start_munge() {
    # A munged that answers is enough, whoever started it.
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return 0
    fi
    install -d -o munge -g munge -m 700 /etc/munge
    if [ ! -s /etc/munge/munge.key ]; then
        log "creating a munge key"
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    install -d -o munge -g munge -m 755 /run/munge
    install -d -o munge -g munge -m 700 /var/lib/munge /var/log/munge
    runuser -u munge -- munged --force
    # munged writes its pid to /run/munge/munged.pid; keep a copy so `stop` ends only what we started.
    for _ in $(seq 1 50); do
        if [ -s /run/munge/munged.pid ] && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
            cp /run/munge/munged.pid "$MUNGE_PID"
            return 0
        fi
        sleep 0.1
    done
    die "munged did not start (see /var/log/munge/munged.log)"
}

# GNU nproc honours OMP_NUM_THREADS / OMP_THREAD_LIMIT: a caller that pinned its own threads to 1
# (as the test suite does) would otherwise get a one-CPU node on which 2-thread jobs never start.
machine_cpus() {
    env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc
}

write_config() {
    local cpus mem_mb
    cpus="$(machine_cpus)"
    # Leave ~1 GiB to the system so that slurmd does not drain the node for low memory.
    mem_mb="$(awk '/MemTotal/ {m = int($2 / 1024) - 1024; if (m < 512) m = 512; print m}' /proc/meminfo)"
    mkdir -p "$STATE_DIR"/{ctld,spool,log} /etc/slurm
    cat >"$CONF.tmp" <<EOF
# Written by pairfactory scripts/slurm_cluster.sh: a single-node test cluster. Do not use in production.
ClusterName=pairfactory
SlurmctldHost=$HOST
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# squeue is the only job-state source without slurmdbd: keep finished jobs listed for a day.
MinJobAge=86400
ReturnToService=2
SchedulerType=sched/backfill
MpiDefault=none
NodeName=$HOST CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
}

cluster_up() {
    scontrol ping 2>/dev/null | grep -q "UP" && alive "$SLURMD_PID"
}

wait_node_idle() {
    for _ in $(seq 1 60); do
        local state
        state="$(sinfo -h -n "$HOST" -o '%t' 2>/dev/null | head -1)"
        case "$state" in
            idle* | mix* | alloc*) return 0 ;;
            drain* | down*) scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true ;;
        esac
        sleep 0.5
    done
    die "node $HOST did not become idle (see $STATE_DIR/log/slurmd.log, slurmctld.log)"
}

cmd_start() {
    need_root
    install_packages
    mkdir -p "$STATE_DIR"
    start_munge
    if cluster_up; then
        log "already running"
        wait_node_idle
        cmd_status
        return 0
    fi
    write_config
    if ! alive "$CTLD_PID"; then
        # -c: fresh state, so that a stale job list from an earlier run does not come back.
        slurmctld -c
    fi
    for _ in $(seq 1 50); do
        scontrol ping 2>/dev/null | grep -q UP && break
        sleep 0.2
    done
    scontrol ping 2>/dev/null | grep -q UP || die "slurmctld did not start (see $STATE_DIR/log/slurmctld.log)"
    if ! alive "$SLURMD_PID"; then
        slurmd
    fi
    wait_node_idle
    log "started: partition '$PARTITION' on $HOST ($(machine_cpus) CPUs)"
    cmd_status
}

stop_pidfile() {
    local name="$1" file="$2"
    if alive "$file"; then
        local pid
        pid="$(cat "$file")"
        kill "$pid"
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
        log "stopped $name (pid $pid)"
    fi
    rm -f "$file"
}

cmd_stop() {
    need_root
    # Cancel what is still queued so that no job step outlives its daemon.
    if cluster_up; then
        scancel --partition="$PARTITION" 2>/dev/null || true
    fi
    stop_pidfile slurmd "$SLURMD_PID"
    stop_pidfile slurmctld "$CTLD_PID"
    # Only a munged this script started (its pid copied at start) is stopped.
    if [ -s "$MUNGE_PID" ] && [ -s /run/munge/munged.pid ] && [ "$(cat "$MUNGE_PID")" = "$(cat /run/munge/munged.pid)" ]; then
        stop_pidfile munged "$MUNGE_PID"
    fi
    rm -f "$MUNGE_PID"
}

cmd_status() {
    if ! command -v sinfo >/dev/null; then
        echo "slurm: not installed"
        return 3
    fi
    if cluster_up; then
        echo "slurm: up (slurmctld pid $(cat "$CTLD_PID" 2>/dev/null || echo '?'), slurmd pid $(cat "$SLURMD_PID" 2>/dev/null || echo '?'))"
        sinfo
        squeue
        return 0
    fi
    echo "slurm: down"
    return 3
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac
