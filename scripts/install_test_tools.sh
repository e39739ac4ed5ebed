#!/usr/bin/env bash
# What only the test suite needs, beside the project's own environment (scripts/install.sh): a browser for the
# dashboard's tests, the validators of the deployment files, iproute2 for the multi-node test's network namespace,
# and CompatCanary (the OpenAI-compatibility scanner tests/e2e/test_compatcanary.py runs), pinned and installed
# here so no test downloads anything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_browser.sh
bash scripts/install_deploy_tools.sh
if ! command -v ip >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends iproute2 >/dev/null
fi

# CompatCanary needs Node >= 20, which install_deploy_tools.sh has made sure of (the machine's, or the wheel's).
venv=${PONDER_VENV:-.venv}
npm=npm
[ -x "$venv/bin/npm" ] && npm="$venv/bin/npm"
canary="$venv/tools/compatcanary"
if ! grep -qs '"version": "0.2.2"' "$canary/node_modules/compatcanary/package.json"; then
  "$npm" install --prefix "$canary" --no-audit --no-fund --loglevel=error 'compatcanary@0.2.2'
fi
