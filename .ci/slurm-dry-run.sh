#!/usr/bin/env bash
# The paper config planned through the site profile profiles/slurm (`make dry-run`), without a cluster: a dry-run
# never calls sbatch. The profile is copied with its placeholders filled in from SLURM_PARTITION and SLURM_ACCOUNT,
# as a user fills them in, and every planned job must carry both (a workflow profile's `default-resources`
# would silently replace the site profile's, partition and account included: the rules declare their own).
#
#   SLURM_PARTITION=gpu SLURM_ACCOUNT=lab bash .ci/slurm-dry-run.sh .venv/bin/snakemake
set -euo pipefail
cd "$(dirname "$0")/.."
snakemake=${1:?usage: slurm-dry-run.sh SNAKEMAKE}
partition=${SLURM_PARTITION:?set SLURM_PARTITION}
account=${SLURM_ACCOUNT:?set SLURM_ACCOUNT}

site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
sed -e "s|^\(  slurm_partition:\) \"CHANGE-ME\"|\1 \"$partition\"|" \
    -e "s|^\(  slurm_account:\) \"CHANGE-ME\"|\1 \"$account\"|" \
    profiles/slurm/config.yaml >"$site/config.yaml"
if grep -n "CHANGE-ME" "$site/config.yaml"; then
    echo "slurm-dry-run: a placeholder of profiles/slurm/config.yaml was left unfilled" >&2
    exit 1
fi

"$snakemake" -n --configfile config/paper.yaml --profile "$site" >"$site/plan.txt"
jobs=$(grep -c '^    resources: ' "$site/plan.txt" || true)
carrying=$(grep '^    resources: ' "$site/plan.txt" | grep -E "slurm_partition=$partition(,|$)" |
    grep -c -E "slurm_account=$account(,|$)" || true)
if [[ $jobs -eq 0 || $carrying -ne $jobs ]]; then
    echo "slurm-dry-run: $((jobs - carrying)) of $jobs planned jobs lack slurm_partition=$partition" \
        "or slurm_account=$account:" >&2
    grep -m 3 '^    resources: ' "$site/plan.txt" >&2 || true
    exit 1
fi
echo "slurm-dry-run: $jobs jobs planned through profiles/slurm, each with partition $partition and account $account"
