#!/usr/bin/env bash
# The main job, on a fresh Debian machine: install the project, start the local
# services, then build the example flow's image (flows/) and push it to the local
# authenticated registry. Prints the image reference. Run it twice: the second run
# neither builds nor pushes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash scripts/services.sh up >/dev/null
set -a; source "${FLYIMAGE_STATE_DIR:-/var/tmp/prefect-flyimage}/env"; set +a
exec python3 -m prefect_flyimage.demo "$@"
