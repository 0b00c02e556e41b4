#!/usr/bin/env bash
# Install prefect-flyimage for development (editable, with test extras). Idempotent.
# The local docker/registry services for integration tests: scripts/services.sh up
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -f pyproject.toml ]] || { echo "bootstrap: no pyproject.toml in $(pwd)" >&2; exit 1; }
if ! python3 -m pip --version >/dev/null 2>&1; then
    # A bare Debian python3 has no pip: take Debian's.
    echo "bootstrap: installing python3-pip with apt-get" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip python3-venv >/dev/null
fi
opts=(-q --disable-pip-version-check --root-user-action=ignore)
# a Debian system python refuses pip installs (PEP 668) unless told
if python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
    opts+=(--break-system-packages)
fi
# Already done for this checkout and this pyproject.toml: skip pip (a no-op install costs
# ~10 s, which matters to a second scripts/demo.sh). FLYIMAGE_BOOTSTRAP_FORCE=1 reinstalls.
stamp_dir="${FLYIMAGE_STATE_DIR:-/var/tmp/prefect-flyimage}"
stamp="$stamp_dir/bootstrap-$(pwd | md5sum | cut -c1-12).stamp"
want="$(cat pyproject.toml | md5sum | cut -c1-32) $(command -v python3)"
if [[ "${FLYIMAGE_BOOTSTRAP_FORCE:-0}" != 1 && -f "$stamp" && "$(cat "$stamp")" == "$want" ]] \
    && (repo="$(pwd)" && cd / && python3 -c 'import sys, prefect_flyimage; sys.exit(not prefect_flyimage.__file__.startswith(sys.argv[1] + "/"))' "$repo") 2>/dev/null; then
    echo "bootstrap: already installed from $(pwd) (pyproject.toml unchanged)" >&2
    exit 0
fi
echo "bootstrap: python3 -m pip install ${opts[*]} -e '.[test]'" >&2
python3 -m pip install "${opts[@]}" -e '.[test]'
mkdir -p "$stamp_dir" && printf '%s' "$want" >"$stamp"
python3 -c 'import prefect_flyimage' && echo "bootstrap: prefect_flyimage importable" >&2
