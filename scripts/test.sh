#!/usr/bin/env bash
# Run the whole test suite on a fresh Debian machine: install the project, start
# dockerd + registries + base images (scripts/services.sh), then pytest on the newest
# Prefect (pyproject's test extra), then the Prefect-facing tests (marker
# `prefect_compat`) again on the oldest supported Prefect (scripts/compat-env.sh, with
# a Prefect stand-in image of that version).
# Then the BuildKit-through-buildx tests and the pipeline's on the modern daemon (Docker 26
# with the containerd image store, scripts/services.sh with FLYIMAGE_DOCKER=modern, its own
# state dir and registry ports beside the classic stack).
# Extra arguments go to the first pytest only (e.g. `bash scripts/test.sh -k pipeline`);
# with arguments the compat and modern runs are skipped unless FLYIMAGE_COMPAT=1 /
# FLYIMAGE_MODERN=1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash scripts/services.sh up >/dev/null
set -a; source "${FLYIMAGE_STATE_DIR:-/var/tmp/prefect-flyimage}/env"; set +a

status=0
python3 -m pytest "$@" || status=$?

if [[ $# -eq 0 || "${FLYIMAGE_COMPAT:-0}" == 1 ]]; then
    compat_python="$(bash scripts/compat-env.sh)"
    compat_version="$("$compat_python" -c 'import importlib.metadata as m; print(m.version("prefect"))')"
    compat_image="$(bash scripts/services.sh standin "$compat_version")"
    echo "[test.sh] Prefect-facing tests on the oldest supported Prefect ($compat_version, image $compat_image)" >&2
    compat_status=0
    FLYIMAGE_PREFECT_IMAGE="$compat_image" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" \
        "$compat_python" -m pytest -m prefect_compat -p no:cacheprovider || compat_status=$?
    [[ $status -ne 0 ]] || status=$compat_status
fi

if [[ $# -eq 0 || "${FLYIMAGE_MODERN:-0}" == 1 ]]; then
    modern_state="${FLYIMAGE_MODERN_STATE_DIR:-/var/tmp/flyimage-d26}"
    echo "[test.sh] buildx and pipeline tests on the modern daemon (state $modern_state)" >&2
    modern_status=0
    (
        # The classic stack's variables must not leak into the modern one's `up`.
        unset DOCKER_HOST PREFECT_FLYIMAGE_DOCKER_CLI
        FLYIMAGE_DOCKER=modern FLYIMAGE_STATE_DIR="$modern_state" \
            FLYIMAGE_REGISTRY_PORT="${FLYIMAGE_MODERN_REGISTRY_PORT:-5200}" \
            FLYIMAGE_REGISTRY_NOAUTH_PORT="${FLYIMAGE_MODERN_REGISTRY_NOAUTH_PORT:-5201}" \
            bash scripts/services.sh up >/dev/null
        set -a; source "$modern_state/env"; set +a
        python3 -m pytest -p no:cacheprovider tests/integration/test_buildx_modern.py \
            tests/integration/test_pipeline.py tests/integration/test_docker_image_integration.py \
            tests/integration/test_append_integration.py tests/integration/test_append_front_doors.py
    ) || modern_status=$?
    [[ $status -ne 0 ]] || status=$modern_status
fi
exit "$status"
