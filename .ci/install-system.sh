#!/usr/bin/env bash
# Install the system packages the test-suite needs for its throwaway
# single-node SLURM cluster (see tests/cluster/slurmcluster.py).
#
#   * slurm-wlm  -> slurmctld, slurmd, sbatch, squeue, sinfo, scontrol, ...
#   * munge      -> munged, munge, unmunge (SLURM authentication)
#
# Must run as root (CI runs it as root, without a terminal).  Idempotent:
# re-running it when everything is installed only refreshes the apt lists.
#
# The daemons are NOT started here and must not be started by the packages'
# maintainer scripts either: tests/cluster/slurmcluster.py starts and stops its own
# munged/slurmctld/slurmd with its own configuration.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

if [[ ${EUID:-$(id -u)} -ne 0 ]]; then
    echo "install-system.sh: must be run as root" >&2
    exit 1
fi

packages=(slurm-wlm munge)

all_installed() {
    local p
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || return 1
    done
    command -v munged >/dev/null 2>&1 || [[ -x /usr/sbin/munged ]] || return 1
    command -v slurmctld >/dev/null 2>&1 || [[ -x /usr/sbin/slurmctld ]] || return 1
    return 0
}

if all_installed; then
    echo "install-system.sh: ${packages[*]} already installed"
else
    # Forbid the maintainer scripts to start services while installing (the
    # usual Debian mechanism; most container images already ship one).  Only
    # a policy file created here is removed again afterwards.
    created_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    cleanup() {
        if [[ $created_policy -eq 1 ]]; then
            rm -f /usr/sbin/policy-rc.d
        fi
    }
    trap cleanup EXIT

    apt-get update -qq
    apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${packages[@]}" </dev/null
fi

# If an init system is present, keep it from starting the packaged daemons
# (they would use a different configuration and grab the SLURM ports).
if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
    for unit in slurmctld slurmd munge; do
        systemctl disable --now "$unit" >/dev/null 2>&1 || true
    done
elif command -v update-rc.d >/dev/null 2>&1; then
    for svc in slurmctld slurmd munge; do
        if [[ -e /etc/init.d/$svc ]]; then
            update-rc.d "$svc" disable >/dev/null 2>&1 || true
        fi
    done
fi

# Directories the packages normally create; make sure they exist with the
# ownership munged expects (e.g. /run is a fresh tmpfs after a reboot).
if id munge >/dev/null 2>&1; then
    install -d -o munge -g munge -m 0700 /etc/munge /var/log/munge
    install -d -o munge -g munge -m 0711 /var/lib/munge
    install -d -o munge -g munge -m 0755 /run/munge
fi
install -d -m 0755 /etc/slurm

missing=()
for b in slurmctld slurmd munged munge unmunge sbatch squeue sinfo scontrol; do
    if ! command -v "$b" >/dev/null 2>&1 && [[ ! -x /usr/sbin/$b ]] && [[ ! -x /usr/bin/$b ]]; then
        missing+=("$b")
    fi
done
if ((${#missing[@]})); then
    echo "install-system.sh: still missing after install: ${missing[*]}" >&2
    exit 1
fi

echo "install-system.sh: OK ($(slurmctld -V 2>/dev/null || echo 'slurm ?'), $(munged -V 2>/dev/null | head -n1 || echo 'munge ?'))"
