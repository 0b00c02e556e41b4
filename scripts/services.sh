#!/usr/bin/env bash
# Local services for prefect-flyimage's integration tests.
#
#   scripts/services.sh up      install what is missing, start dockerd and two registries,
#                               import/build the base images, write and print $STATE/env
#   scripts/services.sh down    stop what `up` started (pidfiles); caches stay
#   scripts/services.sh status  one line per service; exit 0 iff everything is up
#   scripts/services.sh env     print $STATE/env
#   scripts/services.sh standin VERSION
#                               build (or load) the Prefect stand-in image for Prefect VERSION
#                               beside the one `up` made; touches nothing else; prints its tag
#
# Idempotent and non-interactive; meant for a Debian bookworm machine as root.
# Nothing is pulled from a registry: the base images are made from Debian packages
# (busybox-static, debootstrap) and PyPI wheels.  See scripts/README-services.md.
set -euo pipefail

STATE="${FLYIMAGE_STATE_DIR:-/var/tmp/prefect-flyimage}"
DOCKERD_TIMEOUT="${FLYIMAGE_DOCKERD_TIMEOUT:-60}"
REGISTRY_TIMEOUT="${FLYIMAGE_REGISTRY_TIMEOUT:-30}"
BUSYBOX_IMAGE="flyimage/busybox:latest"
PYTHON_IMAGE="flyimage/python:3.11-bookworm"
DEFAULT_PREFECT_VERSION="3.8.8"
FASTAPI_SPEC="fastapi<0.151"   # prefect 3.8.8's server fails to import with fastapi >= 0.151
DEFAULT_DOCKER_HOST="unix:///var/run/docker.sock"
IMAGE_PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PYTHON_ROOTFS_KEY="python-3.11-bookworm-v2"   # bump to force a new debootstrap
APT_PACKAGES=(docker.io docker-registry debootstrap busybox-static apache2-utils ca-certificates curl)
export DEBIAN_FRONTEND=noninteractive
# Our builds use only Dockerfile features of the classic builder, which every docker CLI
# has (the docker 28 CLI has no BuildKit client of its own without the buildx plugin).
export DOCKER_BUILDKIT=0

# Which daemon the tests get (ONE setting; recorded in $STATE/env):
#   classic  the system's dockerd (Debian bookworm's docker.io 20.10, classic builder)
#   modern   Docker 26 (Debian trixie's docker.io, docker-cli, docker-buildx, containerd)
#            unpacked beside the system's into $FLYIMAGE_DOCKER26_PREFIX, with the
#            containerd image store, buildx and qemu/binfmt (multi-platform builds)
DOCKER26_PREFIX="${FLYIMAGE_DOCKER26_PREFIX:-/opt/flyimage-docker26}"
DOCKER26_SOCKET="unix:///run/flyimage-docker26/docker.sock"
TRIXIE_MIRROR="${FLYIMAGE_TRIXIE_MIRROR:-http://deb.debian.org/debian}"
DOCKER26_DEBS=(docker.io docker-cli docker-buildx containerd)
QEMU_PACKAGES=(qemu-user-static binfmt-support)

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }
tail_log() { [[ -f "$1" ]] && { echo "----- tail of $1 -----"; tail -n "${2:-30}" "$1"; echo "-----"; } >&2 || true; }

mkdir -p "$STATE"
STATE="$(cd "$STATE" && pwd)"
ENV_FILE="$STATE/env"
SECRETS="$STATE/secrets"
CACHE="$STATE/cache"
WORK="$STATE/work"

# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------

# value of KEY in the env file (empty if absent)
env_file_value() {
    [[ -f "$ENV_FILE" ]] || return 0
    sed -n "s/^export $1='\(.*\)'\$/\1/p" "$ENV_FILE" | tail -n 1
}

# Ports: the caller's, else those `up` recorded in this state dir, else 5000/5001.
recorded="$(env_file_value FLYIMAGE_REGISTRY)"
REG_PORT="${FLYIMAGE_REGISTRY_PORT:-${recorded##*:}}"
REG_PORT="${REG_PORT:-5000}"
recorded="$(env_file_value FLYIMAGE_REGISTRY_NOAUTH)"
NOAUTH_PORT="${FLYIMAGE_REGISTRY_NOAUTH_PORT:-${recorded##*:}}"
NOAUTH_PORT="${NOAUTH_PORT:-5001}"

recorded="$(env_file_value FLYIMAGE_DOCKER)"
FLYIMAGE_DOCKER="${FLYIMAGE_DOCKER:-${recorded:-classic}}"
case "$FLYIMAGE_DOCKER" in
    classic) ;;
    modern) DEFAULT_DOCKER_HOST="$DOCKER26_SOCKET" ;;
    *) die "FLYIMAGE_DOCKER=$FLYIMAGE_DOCKER: expected classic or modern" ;;
esac

# Use the caller's DOCKER_HOST, else the one `up` recorded, else the default socket.
if [[ -z "${DOCKER_HOST:-}" ]]; then
    recorded="$(env_file_value DOCKER_HOST)"
    export DOCKER_HOST="${recorded:-$DEFAULT_DOCKER_HOST}"
fi

# The modern daemon is driven with its own CLI: a wrapper in $STATE/bin that runs the
# buildx plugin standalone for `docker buildx ...` (plugins are looked up in the docker
# config dir, which tests replace with empty ones).
DOCKER26_CLI="$STATE/bin/docker"
if [[ "$FLYIMAGE_DOCKER" == modern ]]; then
    docker() { "$DOCKER26_CLI" "$@"; }
fi

random_token() { head -c "${1:-24}" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# pid from pidfile if that process is alive and its command line contains $2
live_pid() {
    local pidfile=$1 pattern=$2 pid cmd
    [[ -s "$pidfile" ]] || return 1
    pid="$(tr -dc 0-9 <"$pidfile")"
    [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
    cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
    [[ "$cmd" == *"$pattern"* ]] || return 1
    echo "$pid"
}

stop_pid() {
    local name=$1 pidfile=$2 pattern=$3 wait_s=${4:-30} pid i
    if ! pid="$(live_pid "$pidfile" "$pattern")"; then
        log "$name: not running (no live pidfile $pidfile)"
        rm -f "$pidfile"
        return 0
    fi
    log "$name: stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < wait_s * 5; i++)); do
        [[ -d "/proc/$pid" ]] || break
        sleep 0.2
    done
    if [[ -d "/proc/$pid" ]]; then
        log "$name: still alive after ${wait_s}s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$pidfile"
}

docker_ok() { timeout 15 docker info >/dev/null 2>&1; }

http_code() { curl -s -o /dev/null -m 3 -w '%{http_code}' "$@" 2>/dev/null || true; }

image_present() { docker image inspect "$1" >/dev/null 2>&1; }

prefect_version() {
    local v=""
    if [[ -n "${FLYIMAGE_PREFECT_VERSION:-}" ]]; then echo "$FLYIMAGE_PREFECT_VERSION"; return; fi
    if command -v python3 >/dev/null 2>&1; then
        v="$(python3 -c 'import importlib.metadata as m; print(m.version("prefect"))' 2>/dev/null || true)"
    fi
    echo "${v:-$DEFAULT_PREFECT_VERSION}"
}

host_dist_version() {  # version of an installed host distribution, or nothing
    command -v python3 >/dev/null 2>&1 || return 0
    python3 -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$1" 2>/dev/null || true
}

# The oldest supported Prefect: the floor in pyproject.toml (`prefect>=X`). Its stand-in
# is built beside the installed version's: pinned Dockerfiles (flows/example) and the
# compat run of scripts/test.sh use it.
floor_prefect_version() {
    local pyproject
    pyproject="$(dirname "${BASH_SOURCE[0]}")/../pyproject.toml"
    [[ -f "$pyproject" ]] || return 0
    sed -n 's/^ *"prefect>=\([0-9][0-9a-z.]*\).*/\1/p' "$pyproject" | head -n 1
}

python_image_minor() {  # ensure_python_image checks that the image's python is this one
    local tag=${PYTHON_IMAGE##*:}
    echo "${tag%%-*}"
}

prefect_image_name() {
    local name=""
    if [[ -n "${FLYIMAGE_PREFECT_IMAGE:-}" ]]; then echo "$FLYIMAGE_PREFECT_IMAGE"; return; fi
    local version
    version="$(prefect_version)"
    if [[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] && command -v python3 >/dev/null 2>&1; then
        # a release: Prefect's name is prefecthq/prefect:<version>-python<X.Y>; no need to
        # import prefect (seconds) to be told so
        echo "prefecthq/prefect:$version-python$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
        return
    fi
    if command -v python3 >/dev/null 2>&1; then
        name="$(python3 -c 'from prefect.utilities.dockerutils import get_prefect_image_name; print(get_prefect_image_name())' 2>/dev/null | tail -n 1 || true)"
    fi
    if [[ -z "$name" ]]; then
        local pyv="3.11"
        if command -v python3 >/dev/null 2>&1; then
            pyv="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo 3.11)"
        fi
        name="prefecthq/prefect:$(prefect_version)-python$pyv"
    fi
    echo "$name"
}

# ---------------------------------------------------------------------------------------
# 1. Debian packages
# ---------------------------------------------------------------------------------------
missing_packages() {  # prints those of the named Debian packages that are not installed
    local p
    for p in "$@"; do
        [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" == "install ok installed" ]] || echo "$p"
    done
}

ensure_packages() {
    local missing
    mapfile -t missing < <(missing_packages "${APT_PACKAGES[@]}")
    if ((${#missing[@]} == 0)); then
        log "packages: all present (${APT_PACKAGES[*]})"
        return 0
    fi
    [[ $EUID -eq 0 ]] || die "packages: missing ${missing[*]} and not root: install them first"
    log "packages: installing ${missing[*]}"
    local apt_opts=(-y -q -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    apt-get "${apt_opts[@]}" update >"$STATE/apt.log" 2>&1 || { tail_log "$STATE/apt.log"; die "packages: apt-get update failed"; }
    apt-get "${apt_opts[@]}" install --no-install-recommends "${missing[@]}" >>"$STATE/apt.log" 2>&1 \
        || { tail_log "$STATE/apt.log"; die "packages: apt-get install ${missing[*]} failed"; }
    log "packages: installed"
}

# Docker 26 beside the system's docker.io: trixie's .debs fetched with a private apt
# configuration (the host's apt sources and packages stay untouched) and unpacked into
# $DOCKER26_PREFIX. Only what runs on bookworm's libc is kept (runc is the host's).
private_apt() {  # apt-get with a trixie-only source list under $CACHE/apt-trixie
    local d="$CACHE/apt-trixie"
    mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $TRIXIE_MIRROR trixie main" >"$d/sources.list"
    apt-get -q -o Dir::Etc::sourcelist="$d/sources.list" -o Dir::Etc::sourceparts=/nonexistent \
        -o Dir::State::Lists="$d/lists" -o Dir::Cache="$d/cache" \
        -o APT::Architectures::=amd64 -o APT::Architectures::=arm64 -o APT::Sandbox::User=root "$@"
}

ensure_docker26() {
    local stamp="$DOCKER26_PREFIX/.flyimage-complete" want="${DOCKER26_DEBS[*]}"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        log "docker 26: present in $DOCKER26_PREFIX"
    else
        [[ $EUID -eq 0 ]] || die "docker 26: not in $DOCKER26_PREFIX and not root"
        local d="$CACHE/docker26-debs" logf="$STATE/apt-trixie.log"
        log "docker 26: fetching ${DOCKER26_DEBS[*]} from trixie ($TRIXIE_MIRROR) into $d"
        rm -rf "$d" && mkdir -p "$d"
        private_apt update >"$logf" 2>&1 || { tail_log "$logf"; die "docker 26: apt-get update (trixie) failed"; }
        (cd "$d" && private_apt download "${DOCKER26_DEBS[@]}") >>"$logf" 2>&1 \
            || { tail_log "$logf"; die "docker 26: apt-get download failed"; }
        local tmp="$DOCKER26_PREFIX.tmp" deb
        rm -rf "$tmp" && mkdir -p "$tmp"
        for deb in "$d"/*.deb; do
            dpkg -x "$deb" "$tmp" || die "docker 26: dpkg -x $deb failed"
        done
        # trixie's runc needs glibc 2.38: the host's runc serves instead
        rm -f "$tmp/usr/sbin/runc" "$tmp/usr/bin/runc"
        rm -rf "$DOCKER26_PREFIX" && mv "$tmp" "$DOCKER26_PREFIX"
        printf '%s' "$want" >"$stamp"
        log "docker 26: unpacked into $DOCKER26_PREFIX"
    fi
    command -v runc >/dev/null 2>&1 || die "docker 26: needs the host's runc (apt-get install runc)"
    mkdir -p "$STATE/bin"
    {
        echo '#!/bin/sh'
        echo '# written by scripts/services.sh: the Docker 26 CLI; `docker buildx` runs the plugin standalone'
        echo "if [ \"\$1\" = buildx ]; then shift; exec '$DOCKER26_PREFIX/usr/libexec/docker/cli-plugins/docker-buildx' \"\$@\"; fi"
        echo "exec '$DOCKER26_PREFIX/usr/bin/docker' \"\$@\""
    } >"$DOCKER26_CLI.tmp"
    chmod 755 "$DOCKER26_CLI.tmp" && mv "$DOCKER26_CLI.tmp" "$DOCKER26_CLI"
    "$DOCKER26_CLI" buildx version >/dev/null 2>&1 || die "docker 26: buildx does not run"
}

# qemu-user-static registered for arm64 with the flags POCF: F opens the interpreter at
# registration, so it works inside containers (Debian registers it without F); P keeps
# argv[0], which busybox's shell needs when it re-executes itself for an applet.
ensure_qemu() {
    local missing
    mapfile -t missing < <(missing_packages "${QEMU_PACKAGES[@]}")
    if ((${#missing[@]})); then
        [[ $EUID -eq 0 ]] || die "qemu: missing ${missing[*]} and not root"
        log "qemu: installing ${missing[*]}"
        apt-get -y -q -o DPkg::Lock::Timeout=600 install --no-install-recommends "${missing[@]}" >>"$STATE/apt.log" 2>&1 \
            || { tail_log "$STATE/apt.log"; die "qemu: apt-get install failed"; }
    fi
    local bm=/proc/sys/fs/binfmt_misc
    [[ -e "$bm/register" ]] || mount -t binfmt_misc binfmt_misc "$bm" || die "qemu: cannot mount $bm"
    if [[ -e "$bm/qemu-aarch64" ]] && grep -q '^flags: .*P.*F' "$bm/qemu-aarch64"; then
        log "qemu: aarch64 registered (POCF)"
        return 0
    fi
    [[ -e "$bm/qemu-aarch64" ]] && echo -1 >"$bm/qemu-aarch64"
    printf '%s' ':qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64-static:POCF' >"$bm/register" \
        || die "qemu: registering aarch64 failed"
    log "qemu: aarch64 registered with /usr/bin/qemu-aarch64-static (POCF)"
}

# ---------------------------------------------------------------------------------------
# 2. dockerd
# ---------------------------------------------------------------------------------------
ensure_dockerd() {
    local pidfile="$STATE/dockerd.pid" logf="$STATE/dockerd.log" pid i
    if docker_ok; then
        log "dockerd: answering at $DOCKER_HOST (reused; server $(docker version --format '{{.Server.Version}}' 2>/dev/null))"
        return 0
    fi
    local dockerd_bin=dockerd
    if [[ "$FLYIMAGE_DOCKER" == modern ]]; then
        dockerd_bin="$DOCKER26_PREFIX/usr/sbin/dockerd"
        [[ -x "$dockerd_bin" ]] || die "dockerd: $dockerd_bin missing (ensure_docker26)"
    else
        # An absolute path now: the PATH below puts the modern prefix first, and a bare
        # `dockerd` would then start Docker 26 as the "classic" daemon.
        dockerd_bin="$(command -v dockerd)" || die "dockerd: not installed"
    fi
    local run_path="$PATH"
    if [[ "$FLYIMAGE_DOCKER" == modern ]]; then
        run_path="$DOCKER26_PREFIX/usr/bin:$DOCKER26_PREFIX/usr/sbin:$PATH"
    fi
    # No default bridge: a bridge would put containers on a private address range (and
    # with --iptables=false it has no NAT anyway). Containers here use --network host or
    # none; prefect-flyimage's engine builds with host networking on such a daemon.
    local args=(--iptables=false --bridge=none --pidfile "$pidfile")
    if [[ "$FLYIMAGE_DOCKER" == modern ]]; then
        # containerd image store: multi-platform images, OCI indexes, registry cache export
        mkdir -p "$STATE"
        printf '{"features": {"containerd-snapshotter": true}}\n' >"$STATE/daemon.json"
        args+=(--config-file "$STATE/daemon.json")
    fi
    case "$DOCKER_HOST" in
        "/var/run/docker.sock"|"unix:///var/run/docker.sock")
            [[ "$FLYIMAGE_DOCKER" == classic ]] || die "dockerd: the modern daemon must not take the system socket"
            ;;
        unix://*)
            # A second daemon beside the default one: its own socket, data and exec root.
            args+=(-H "$DOCKER_HOST" --data-root "$STATE/docker-data" --exec-root "$STATE/docker-exec")
            mkdir -p "$(dirname "${DOCKER_HOST#unix://}")"
            ;;
        *) die "dockerd: DOCKER_HOST=$DOCKER_HOST does not answer and is not a unix socket we could start dockerd on" ;;
    esac
    if pid="$(live_pid "$pidfile" dockerd)"; then
        log "dockerd: pid $pid from an earlier run is alive but not answering; waiting for it"
    else
        log "dockerd: starting (dockerd ${args[*]}), log $logf"
        echo "=== $(date -Is) dockerd ${args[*]}" >>"$logf"
        # the modern daemon finds its containerd, shims and docker-init in its prefix
        # first; runc is the host's (trixie's needs glibc 2.38); the classic one, the system's
        PATH="$run_path" setsid nohup "$dockerd_bin" "${args[@]}" >>"$logf" 2>&1 </dev/null &
        pid=$!
    fi
    for ((i = 0; i < DOCKERD_TIMEOUT * 2; i++)); do
        if docker_ok; then
            log "dockerd: up at $DOCKER_HOST after ~$((i / 2))s"
            return 0
        fi
        if [[ ! -d "/proc/$pid" ]]; then
            tail_log "$logf"
            die "dockerd: exited while starting (see $logf)"
        fi
        sleep 0.5
    done
    tail_log "$logf"
    die "dockerd: not answering at $DOCKER_HOST after ${DOCKERD_TIMEOUT}s (see $logf)"
}

# ---------------------------------------------------------------------------------------
# 3. registries
# ---------------------------------------------------------------------------------------
secret_file() {  # secret_file NAME [prefix] -> path; generated once
    local f="$SECRETS/$1"
    if [[ ! -s "$f" ]]; then
        (umask 077 && mkdir -p "$SECRETS" && printf '%s%s' "${2:-}" "$(random_token 24)" >"$f.tmp" && mv "$f.tmp" "$f")
    fi
    echo "$f"
}

write_registry_config() {  # name port auth(0|1)
    local name=$1 port=$2 auth=$3 dir="$STATE/registry-$1"
    mkdir -p "$dir/data"
    local secret
    secret="$(cat "$(secret_file "registry-http-secret")")"
    {
        echo "# generated by scripts/services.sh; rewritten on every start"
        echo "version: 0.1"
        echo "log:"
        echo "  level: info"
        echo "  formatter: text"
        echo "  fields:"
        echo "    service: flyimage-registry-$name"
        echo "storage:"
        echo "  filesystem:"
        echo "    rootdirectory: $dir/data"
        echo "  delete:"
        echo "    enabled: true"
        echo "  maintenance:"
        echo "    uploadpurging:"
        echo "      enabled: false"
        echo "http:"
        echo "  addr: 127.0.0.1:$port"
        echo "  secret: $secret"
        echo "  headers:"
        echo "    X-Content-Type-Options: [nosniff]"
        if [[ $auth == 1 ]]; then
            echo "auth:"
            echo "  htpasswd:"
            echo "    realm: flyimage"
            echo "    path: $dir/htpasswd"
        fi
    } >"$dir/config.yml"
    if [[ $auth == 1 ]]; then
        local pw token
        pw="$(cat "$(secret_file registry-password)")"
        token="$(cat "$(secret_file fly-token)")"
        { htpasswd -Bbn flyimage "$pw"; htpasswd -Bbn x "$token"; } | sed '/^$/d' >"$dir/htpasswd.tmp"
        chmod 600 "$dir/htpasswd.tmp"
        mv "$dir/htpasswd.tmp" "$dir/htpasswd"
    fi
}

registry_creds_ok() {  # port -> both users accepted
    local port=$1 pw token
    pw="$(cat "$SECRETS/registry-password" 2>/dev/null || true)"
    token="$(cat "$SECRETS/fly-token" 2>/dev/null || true)"
    [[ -n "$pw" && -n "$token" ]] || return 1
    [[ "$(http_code -u "flyimage:$pw" "http://127.0.0.1:$port/v2/")" == 200 ]] || return 1
    [[ "$(http_code -u "x:$token" "http://127.0.0.1:$port/v2/")" == 200 ]] || return 1
}

ensure_registry() {  # name port auth(0|1)
    local name=$1 port=$2 auth=$3 dir="$STATE/registry-$1" want=200 code pid i
    [[ $auth == 1 ]] && want=401
    local label="registry $name (127.0.0.1:$port)"
    local pidfile="$dir/registry.pid" logf="$dir/registry.log"
    code="$(http_code "http://127.0.0.1:$port/v2/")"
    if [[ "$code" == "$want" ]]; then
        if [[ $auth == 1 ]] && ! registry_creds_ok "$port"; then
            die "$label: answers but rejects our credentials (not ours? stop it or set FLYIMAGE_REGISTRY_PORT)"
        fi
        if live_pid "$pidfile" docker-registry >/dev/null; then
            log "$label: up (reused)"
        else
            log "$label: answering (not started by us: storage dir may differ)"
        fi
        return 0
    fi
    if pid="$(live_pid "$pidfile" docker-registry)"; then
        log "$label: pid $pid alive but /v2/ answered '$code'; restarting it"
        stop_pid "$label" "$pidfile" docker-registry 10
    fi
    code="$(http_code "http://127.0.0.1:$port/v2/")"
    if [[ "$code" != 000 ]]; then
        die "$label: port $port is taken by something else (GET /v2/ -> $code)"
    fi
    command -v docker-registry >/dev/null 2>&1 || die "$label: docker-registry is not installed"
    mkdir -p "$dir"
    write_registry_config "$name" "$port" "$auth"
    log "$label: starting, storage $dir/data, log $logf"
    echo "=== $(date -Is) docker-registry serve $dir/config.yml" >>"$logf"
    # The inner shell writes its own pid, then execs, so the pidfile names the registry.
    setsid nohup sh -c 'echo $$ >"$1"; exec docker-registry serve "$2"' sh "$pidfile" "$dir/config.yml" \
        >>"$logf" 2>&1 </dev/null &
    pid=$!
    for ((i = 0; i < REGISTRY_TIMEOUT * 5; i++)); do
        code="$(http_code "http://127.0.0.1:$port/v2/")"
        if [[ "$code" == "$want" ]]; then
            if [[ $auth == 1 ]] && ! registry_creds_ok "$port"; then
                tail_log "$logf"
                die "$label: up but rejects the generated credentials"
            fi
            log "$label: up (GET /v2/ -> $code)"
            return 0
        fi
        if [[ ! -d "/proc/$pid" ]]; then
            tail_log "$logf"
            die "$label: exited while starting (see $logf)"
        fi
        sleep 0.2
    done
    tail_log "$logf"
    die "$label: GET /v2/ did not return $want within ${REGISTRY_TIMEOUT}s (last: '$code')"
}

# ---------------------------------------------------------------------------------------
# 4. base images: scripts/bases.sh
# ---------------------------------------------------------------------------------------
# shellcheck source=scripts/bases.sh
source "$(dirname "${BASH_SOURCE[0]}")/bases.sh"

# ---------------------------------------------------------------------------------------
# 5. env file
# ---------------------------------------------------------------------------------------
write_env() {
    local prefect_tag=$1
    local tmp="$ENV_FILE.tmp"
    {
        echo "# written by scripts/services.sh up on $(date -Is); source it"
        printf "export DOCKER_HOST='%s'\n" "$DOCKER_HOST"
        printf "export FLYIMAGE_STATE_DIR='%s'\n" "$STATE"
        printf "export FLYIMAGE_REGISTRY='%s'\n" "127.0.0.1:$REG_PORT"
        printf "export FLYIMAGE_REGISTRY_USER='%s'\n" flyimage
        printf "export FLYIMAGE_REGISTRY_PASSWORD='%s'\n" "$(cat "$SECRETS/registry-password")"
        printf "export FLYIMAGE_FLY_TOKEN='%s'\n" "$(cat "$SECRETS/fly-token")"
        printf "export FLYIMAGE_REGISTRY_STORAGE='%s'\n" "$STATE/registry-auth/data"
        printf "export FLYIMAGE_REGISTRY_NOAUTH='%s'\n" "127.0.0.1:$NOAUTH_PORT"
        printf "export FLYIMAGE_REGISTRY_NOAUTH_STORAGE='%s'\n" "$STATE/registry-noauth/data"
        printf "export FLYIMAGE_BUSYBOX_IMAGE='%s'\n" "$BUSYBOX_IMAGE"
        printf "export FLYIMAGE_PYTHON_IMAGE='%s'\n" "$PYTHON_IMAGE"
        printf "export FLYIMAGE_PREFECT_IMAGE='%s'\n" "$prefect_tag"
        printf "export FLYIMAGE_DOCKER='%s'\n" "$FLYIMAGE_DOCKER"
        if [[ "$FLYIMAGE_DOCKER" == modern ]]; then
            # the engine's BuildKit builds go through this CLI (docker buildx)
            printf "export PREFECT_FLYIMAGE_DOCKER_CLI='%s'\n" "$DOCKER26_CLI"
        fi
    } >"$tmp"
    chmod 600 "$tmp"
    mv "$tmp" "$ENV_FILE"
}

# ---------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------
cmd_up() {
    local t0=$SECONDS
    log "state dir $STATE"
    ensure_packages
    if [[ "$FLYIMAGE_DOCKER" == modern ]]; then
        ensure_docker26
        ensure_qemu
    fi
    ensure_dockerd
    ensure_registry auth "$REG_PORT" 1
    ensure_registry noauth "$NOAUTH_PORT" 0
    ensure_busybox_image
    ensure_python_image
    local ptag pver
    ptag="$(prefect_image_name)"
    pver="$(prefect_version)"
    ensure_prefect_image "$ptag" "$pver"
    local floor
    floor="$(floor_prefect_version)"
    if [[ -n "$floor" && "$floor" != "$pver" ]]; then
        ensure_prefect_image "prefecthq/prefect:$floor-python$(python_image_minor)" "$floor"
    fi
    write_env "$ptag"
    log "all services up in $((SECONDS - t0))s; env in $ENV_FILE"
    cat "$ENV_FILE"
}

cmd_down() {
    stop_pid "registry auth" "$STATE/registry-auth/registry.pid" docker-registry 10
    stop_pid "registry noauth" "$STATE/registry-noauth/registry.pid" docker-registry 10
    stop_pid "dockerd" "$STATE/dockerd.pid" dockerd 60
    # a second daemon's exec root keeps its netns bind mount after exit
    if [[ -d "$STATE/docker-exec" ]] && ! live_pid "$STATE/dockerd.pid" dockerd >/dev/null; then
        unmount_under "$STATE/docker-exec"
    fi
    log "down (caches kept in $STATE)"
}

cmd_status() {
    local all=0 code ptag img dok=0
    docker_ok || dok=1
    if [[ $dok == 0 ]]; then
        echo "dockerd: up ($DOCKER_HOST)"
    else
        echo "dockerd: down ($DOCKER_HOST)"
        all=1
    fi
    code="$(http_code "http://127.0.0.1:$REG_PORT/v2/")"
    if [[ "$code" == 401 ]] && registry_creds_ok "$REG_PORT"; then
        echo "registry auth 127.0.0.1:$REG_PORT: up"
    else
        echo "registry auth 127.0.0.1:$REG_PORT: down (GET /v2/ -> $code)"
        all=1
    fi
    code="$(http_code "http://127.0.0.1:$NOAUTH_PORT/v2/")"
    if [[ "$code" == 200 ]]; then
        echo "registry noauth 127.0.0.1:$NOAUTH_PORT: up"
    else
        echo "registry noauth 127.0.0.1:$NOAUTH_PORT: down (GET /v2/ -> $code)"
        all=1
    fi
    ptag="$(env_file_value FLYIMAGE_PREFECT_IMAGE)"
    [[ -n "$ptag" ]] || ptag="$(prefect_image_name)"
    local extra=() floor
    floor="$(floor_prefect_version)"
    if [[ -n "$floor" && "$ptag" != prefecthq/prefect:"$floor"-* ]]; then
        extra=("prefecthq/prefect:$floor-python$(python_image_minor)")
    fi
    for img in "$BUSYBOX_IMAGE" "$PYTHON_IMAGE" "$ptag" "${extra[@]}"; do
        if [[ $dok == 0 ]] && image_present "$img" && has_arm64_variant "$img"; then
            echo "image $img: up"
        else
            echo "image $img: down"
            all=1
        fi
    done
    if [[ -s "$ENV_FILE" ]]; then
        echo "env file $ENV_FILE: up"
    else
        echo "env file $ENV_FILE: down"
        all=1
    fi
    return $all
}

cmd_standin() {  # VERSION: an extra stand-in, e.g. for the oldest supported Prefect
    local version=${1:-} pyv tag
    [[ -n "$version" ]] || die "usage: $0 standin PREFECT_VERSION"
    docker_ok || die "standin: dockerd is not answering at $DOCKER_HOST (run: $0 up)"
    image_present "$PYTHON_IMAGE" || die "standin: $PYTHON_IMAGE is missing (run: $0 up)"
    pyv="$(python_image_minor)"
    tag="prefecthq/prefect:$version-python$pyv"
    ensure_prefect_image "$tag" "$version"
    echo "$tag"
}

cmd_env() {
    [[ -s "$ENV_FILE" ]] || die "no env file at $ENV_FILE: run scripts/services.sh up"
    cat "$ENV_FILE"
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    standin) cmd_standin "${2:-}" ;;
    *) echo "usage: $0 up|down|status|env|standin VERSION" >&2; exit 2 ;;
esac
