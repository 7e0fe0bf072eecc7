#!/usr/bin/env bash
# Installs the system packages the tests need when they are missing (Debian 12, as root or with sudo):
#   chromium  - the workbench's browser tests (Playwright drives Debian's Chromium; it never downloads a browser).
set -euo pipefail
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing test dependencies: ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
