#!/usr/bin/env bash
# Run the whole test suite on a fresh Debian machine: install the project, start both
# service stacks (scripts/services.sh), then three pytest passes:
#
#   1. the whole suite on the MODERN stack: Docker 26 with the containerd image store,
#      buildx and qemu (FLYIMAGE_DOCKER=modern, its own state dir and registry ports),
#      on the newest Prefect (pyproject's test extra);
#   2. the Prefect-facing tests (marker `prefect_compat`) on the oldest supported Prefect
#      (scripts/compat-env.sh, with a Prefect stand-in image of that version), on the
#      modern stack as well: it is the test daemon;
#   3. a compatibility subset on the CLASSIC stack (the system's Docker 20.10, no buildx,
#      docker-py's classic builder): the product must keep working on Docker >= 20.10.
#      The modules whose code takes the classic path there: the engine (Prefect-style
#      build_image/push_image, build args as docker-py sends them, the classic builder's
#      error words), the pipeline, DockerImage, the append path (classic WORKDIR) and the
#      .dockerignore property (what the classic builder receives).
#
# Extra arguments go to the first pytest only (e.g. `bash scripts/test.sh -k pipeline`);
# with arguments passes 2 and 3 are skipped unless FLYIMAGE_COMPAT=1 / FLYIMAGE_CLASSIC=1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh

classic_state="${FLYIMAGE_STATE_DIR:-/var/tmp/prefect-flyimage}"
modern_state="${FLYIMAGE_MODERN_STATE_DIR:-/var/tmp/flyimage-d26}"
CLASSIC_TESTS=(
    tests/integration/test_dockerutils.py
    tests/integration/test_build_args_integration.py
    tests/integration/test_prefect_compat.py
    tests/integration/test_pipeline.py
    tests/integration/test_docker_image_integration.py
    tests/integration/test_append_integration.py
    tests/integration/test_dockerignore_daemon.py
)

# The two stacks, each in a subshell so neither one's variables leak into the other's `up`.
(
    unset DOCKER_HOST PREFECT_FLYIMAGE_DOCKER_CLI
    FLYIMAGE_DOCKER=classic FLYIMAGE_STATE_DIR="$classic_state" bash scripts/services.sh up >/dev/null
)
(
    unset DOCKER_HOST PREFECT_FLYIMAGE_DOCKER_CLI
    FLYIMAGE_DOCKER=modern FLYIMAGE_STATE_DIR="$modern_state" \
        FLYIMAGE_REGISTRY_PORT="${FLYIMAGE_MODERN_REGISTRY_PORT:-5200}" \
        FLYIMAGE_REGISTRY_NOAUTH_PORT="${FLYIMAGE_MODERN_REGISTRY_NOAUTH_PORT:-5201}" \
        bash scripts/services.sh up >/dev/null
)

use_stack() {  # the env file of one stack, without the other's variables
    unset DOCKER_HOST PREFECT_FLYIMAGE_DOCKER_CLI
    set -a; source "$1/env"; set +a
}

status=0
echo "[test.sh] pass 1: the whole suite on the modern daemon (Docker 26; state $modern_state)" >&2
(use_stack "$modern_state"; python3 -m pytest "$@") || status=$?

if [[ $# -eq 0 || "${FLYIMAGE_COMPAT:-0}" == 1 ]]; then
    compat_status=0
    (
        use_stack "$modern_state"
        compat_python="$(bash scripts/compat-env.sh)"
        compat_version="$("$compat_python" -c 'import importlib.metadata as m; print(m.version("prefect"))')"
        compat_image="$(bash scripts/services.sh standin "$compat_version")"
        echo "[test.sh] pass 2: Prefect-facing tests on the oldest supported Prefect ($compat_version, image $compat_image), modern daemon" >&2
        FLYIMAGE_PREFECT_IMAGE="$compat_image" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" \
            "$compat_python" -m pytest -m prefect_compat -p no:cacheprovider
    ) || compat_status=$?
    [[ $status -ne 0 ]] || status=$compat_status
fi

if [[ $# -eq 0 || "${FLYIMAGE_CLASSIC:-0}" == 1 ]]; then
    classic_status=0
    echo "[test.sh] pass 3: the compatibility subset on the classic daemon (Docker 20.10, no buildx; state $classic_state)" >&2
    (use_stack "$classic_state"; python3 -m pytest -p no:cacheprovider "${CLASSIC_TESTS[@]}") || classic_status=$?
    [[ $status -ne 0 ]] || status=$classic_status
fi
exit "$status"
