#!/usr/bin/env bash
# What only the test suite needs, beside the project's own environment (scripts/install.sh): a browser for the
# dashboard's tests and the validators of the deployment files.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_browser.sh
bash scripts/install_deploy_tools.sh
