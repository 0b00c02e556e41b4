#!/usr/bin/env bash
# The main job, on a fresh Debian machine, with nothing to configure: install the
# project, start the local services, then (prefect_flyimage/demo.py) start a local
# Prefect server, deploy the example flow (flows/example) with prefect-flyimage's
# DockerImage to the local authenticated registry, deploy it with Prefect's own
# DockerImage for comparison, and run it once with a docker worker in the pushed image.
# Prints the run's final state, the image reference, its digest and the deploy times.
# Run it twice: the second run neither builds nor pushes. Everything it starts (server,
# worker, flow-run container) is stopped when it ends or is interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash scripts/services.sh up >/dev/null
set -a; source "${FLYIMAGE_STATE_DIR:-/var/tmp/prefect-flyimage}/env"; set +a
python3 -m prefect_flyimage.demo "$@" &
pid=$!
# Ctrl-C or a kill: the demo unwinds on SIGTERM (stops the server it started).
trap 'kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; exit 130' INT TERM HUP
status=0
wait "$pid" || status=$?
exit "$status"
