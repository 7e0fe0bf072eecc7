#!/usr/bin/env bash
# Regenerates BENCHMARKS.md: Mechanist and the PyTorch peer on the same random GPT-2-small weights.
# Needs Debian's python3-torch and python3-numpy, and libopenblas0-pthread so the peer's BLAS is fair.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! /usr/bin/python3 -c "import torch, numpy" 2>/dev/null; then
  echo "installing the peer: python3-torch python3-numpy libopenblas0-pthread" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-torch python3-numpy libopenblas0-pthread
fi
dotnet build src/Mechanist.Cli -c Release --verbosity quiet
dotnet src/Mechanist.Cli/bin/Release/net10.0/Mechanist.Cli.dll bench --peer bench/peer/gpt2_forward.py --markdown BENCHMARKS.md "$@"
