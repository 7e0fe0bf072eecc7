#!/usr/bin/env bash
# Installs the system packages the tests need when they are missing (Debian 12, as root or with sudo):
#   chromium            - the workbench's browser tests (Playwright drives Debian's Chromium; it never downloads a browser).
#   slurm-wlm and munge - the Slurm tests start a real one-node cluster (munged, slurmctld, slurmd) in a temporary folder.
set -euo pipefail
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/sbin/slurmctld ] && [ -x /usr/sbin/slurmd ] && [ -x /usr/bin/sbatch ] || missing+=(slurm-wlm)
[ -x /usr/sbin/munged ] && [ -x /usr/sbin/mungekey ] || missing+=(munge)
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing test dependencies: ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
