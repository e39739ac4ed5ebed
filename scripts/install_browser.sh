#!/usr/bin/env bash
# The browser the dashboard's end-to-end tests drive: Debian's chromium, run by Playwright's Python package through
# `executable_path` (Playwright's own browser download needs the internet; the Debian package needs only apt).
# Idempotent: does nothing when /usr/bin/chromium is already there.
set -euo pipefail
[ -x /usr/bin/chromium ] && exit 0
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
/usr/bin/chromium --version 2>/dev/null
