#!/usr/bin/env bash
# Regenerates BENCHMARKS.md: Mechanist and the PyTorch peer on the same random GPT-2-small weights.
# Needs Debian's python3-torch, python3-numpy and python3-threadpoolctl, and libopenblas0-pthread so the peer's BLAS is fair
# (the bench checks which BLAS and kernel the peer runs, and refuses to write BENCHMARKS.md for a crippled one).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! /usr/bin/python3 -c "import torch, numpy, threadpoolctl" 2>/dev/null || [ ! -e /usr/lib/x86_64-linux-gnu/openblas-pthread ]; then
  echo "installing the peer: python3-torch python3-numpy python3-threadpoolctl libopenblas0-pthread" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-torch python3-numpy python3-threadpoolctl libopenblas0-pthread
fi
dotnet build src/Mechanist.Cli -c Release --verbosity quiet
dotnet src/Mechanist.Cli/bin/Release/net10.0/Mechanist.Cli.dll bench --peer bench/peer/gpt2_forward.py --markdown BENCHMARKS.md "$@"
