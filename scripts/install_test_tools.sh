#!/usr/bin/env bash
# What only the test suite needs, beside the project's own environment (scripts/install.sh): a browser for the
# dashboard's tests, the validators of the deployment files, and iproute2 for the multi-node test's network namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_browser.sh
bash scripts/install_deploy_tools.sh
if ! command -v ip >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends iproute2 >/dev/null
fi
