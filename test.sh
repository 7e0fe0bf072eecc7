#!/usr/bin/env bash
# The README's test command: installs what the tests need on Debian (see build/install-test-deps.sh), then runs every test.
set -euo pipefail
cd "$(dirname "$0")"
bash build/install-test-deps.sh
exec dotnet test Mechanist.sln -c Release "$@"
