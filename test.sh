#!/usr/bin/env bash
# Sets up (Debian packages), builds, and runs every test. The same command CI runs.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
swift build --build-tests
swift test --skip-build "$@"
