#!/usr/bin/env bash
# Run the whole test suite on a fresh Debian machine: install the project, start
# dockerd + registries + base images (scripts/services.sh), then pytest.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k pipeline`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash scripts/services.sh up >/dev/null
set -a; source "${FLYIMAGE_STATE_DIR:-/var/tmp/prefect-flyimage}/env"; set +a
exec python3 -m pytest "$@"
