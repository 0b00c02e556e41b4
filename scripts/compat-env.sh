#!/usr/bin/env bash
# A virtualenv with the OLDEST Prefect and prefect-docker this project supports: the
# floors of pyproject.toml's dependencies (`prefect>=X`, `prefect-docker>=Y`), so the
# floors are exactly what CI tests. scripts/test.sh runs the tests marked
# `prefect_compat` in it. Prints the venv's python on stdout; logs go to stderr.
#
# Cached in $FLYIMAGE_STATE_DIR (default /var/tmp/prefect-flyimage) as
# venv-prefect-<version>, rebuilt only when the requirements change; the project runs
# from the checkout (PYTHONPATH). Idempotent, non-interactive.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE="${FLYIMAGE_STATE_DIR:-/var/tmp/prefect-flyimage}"
log() { printf '[compat-env] %s\n' "$*" >&2; }

deps() {  # prints the floors of prefect and prefect-docker, then the other dependencies
    python3 - <<'EOF2'
import re
try:
    import tomllib
except ImportError:  # python < 3.11
    import tomli as tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
floors, others = {}, []
for dep in project["dependencies"]:
    m = re.fullmatch(r"(prefect|prefect-docker)\s*>=\s*([^,;\s]+).*", dep.strip())
    if m:
        floors[m.group(1)] = m.group(2)
    else:
        others.append(dep)
# The test extra's own tools (hypothesis, ...), but not its Prefect pins nor what pulls
# a newer Prefect in (prefect-dask): the floors above must stay what is installed.
pinned_here = {"prefect", "prefect-docker", "fastapi", "pytest", "pytest-timeout", "prefect-dask", "distributed"}
for dep in project["optional-dependencies"]["test"]:
    name = re.split(r"[<>=!~;\[\s]", dep.strip(), maxsplit=1)[0].lower()
    if name not in pinned_here:
        others.append(dep)
print(floors["prefect"])
print(floors["prefect-docker"])
print("\n".join(others))
EOF2
}

mapfile -t lines < <(deps)
prefect_version="${lines[0]}"
prefect_docker_version="${lines[1]}"
# Prefect's server fails to import with fastapi >= 0.151 (3.8.x does not pin it itself).
reqs=("prefect==$prefect_version" "prefect-docker==$prefect_docker_version" "fastapi<0.151" "pytest>=8" "pytest-timeout>=2.3" "${lines[@]:2}")
# The project itself is not installed: scripts/test.sh runs it from the checkout
# (PYTHONPATH), so one venv serves every clone.
venv="$STATE/venv-prefect-$prefect_version"
stamp="$venv/.flyimage-complete"
want="$(printf '%s\n' "${reqs[@]}" | md5sum | cut -c1-16)"

if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    log "reusing $venv (prefect $prefect_version, prefect-docker $prefect_docker_version)"
else
    log "creating $venv: ${reqs[*]}"
    rm -rf "$venv"
    mkdir -p "$STATE"
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "${reqs[@]}" >&2
    printf '%s' "$want" >"$stamp"
fi
got="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("prefect"))')"
[[ "$got" == "$prefect_version" ]] || { log "ERROR: $venv has prefect $got, wanted $prefect_version"; exit 1; }
echo "$venv/bin/python"
