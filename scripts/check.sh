#!/usr/bin/env bash
# The checks CI runs before the tests: ruff's lint and format, mypy (strict on compute/, verifiers/ and
# strategies/), and the import-linter contracts that keep the layers (pyproject.toml). Installs its pinned tools.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${PONDER_VENV:-.venv}
"$venv/bin/pip" install -q 'ruff==0.17.6' 'mypy==2.4.1' 'import-linter==2.17'
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
"$venv/bin/mypy"
"$venv/bin/lint-imports"
