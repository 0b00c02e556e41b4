# Base images for scripts/services.sh (sourced by it; uses its helpers and settings):
#   flyimage/busybox:latest, flyimage/python:3.11-bookworm and the Prefect stand-ins.
# Classic stack: amd64 images (docker import, classic builder). Modern stack: each tag
# is one image index for linux/amd64 and linux/arm64, built by `docker buildx build
# --platform linux/amd64,linux/arm64 --load`. The arm64 content is made on the host
# without emulation (debootstrap --foreign, then the .debs unpacked and registered;
# aarch64 wheels installed by the host's pip); qemu only smoke-tests the result.

# arm64 busybox-static from trixie/bookworm's arm64 packages (for the multi-platform busybox)
arm64_busybox() {  # -> path of an aarch64 busybox binary
    local d="$CACHE/busybox-arm64" deb
    if [[ ! -x "$d/usr/bin/busybox" && ! -x "$d/bin/busybox" ]]; then
        mkdir -p "$d"
        (cd "$d" && private_apt update >/dev/null 2>&1; private_apt download busybox-static:arm64) >>"$STATE/apt-trixie.log" 2>&1 \
            || die "image $BUSYBOX_IMAGE: downloading busybox-static:arm64 failed"
        deb="$(ls "$d"/busybox-static_*_arm64.deb | head -n 1)"
        dpkg -x "$deb" "$d" || die "image $BUSYBOX_IMAGE: dpkg -x $deb failed"
    fi
    if [[ -x "$d/usr/bin/busybox" ]]; then echo "$d/usr/bin/busybox"; else echo "$d/bin/busybox"; fi
}


busybox_rootfs_tar() {  # BUSYBOX_BINARY APPLET_LIST_BINARY OUT_TAR
    local bb=$1 lister=$2 out=$3 root applet
    mkdir -p "$WORK"
    root="$(mktemp -d "$WORK/busybox.XXXXXX")"
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp,var/tmp,proc,sys,dev,home}
    chmod 1777 "$root/tmp" "$root/var/tmp"
    chmod 700 "$root/root"
    cp "$bb" "$root/bin/busybox"
    while read -r applet; do
        [[ -z "$applet" || "$applet" == bin/busybox ]] && continue
        mkdir -p "$root/$(dirname "$applet")"
        ln -sf /bin/busybox "$root/$applet"
    done < <("$lister" --list-full)
    [[ -e "$root/bin/sh" ]] || ln -sf /bin/busybox "$root/bin/sh"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    tar --numeric-owner --owner=0 --group=0 -C "$root" -cf "$out" . || { rm -rf "$root"; die "busybox: tar failed"; }
    rm -rf "$root"
}


ensure_busybox_image() {
    if image_present "$BUSYBOX_IMAGE"; then
        if has_arm64_variant "$BUSYBOX_IMAGE"; then
            log "image $BUSYBOX_IMAGE: present"
            return 0
        fi
        log "image $BUSYBOX_IMAGE: present but without linux/arm64; rebuilding"
    fi
    local bb
    bb="$(command -v busybox 2>/dev/null || true)"
    [[ -x /bin/busybox ]] && bb=/bin/busybox
    [[ -n "$bb" ]] || die "image $BUSYBOX_IMAGE: no busybox binary (busybox-static)"
    if [[ "$FLYIMAGE_DOCKER" == modern ]]; then
        # one tag, two platforms (an image index), built by BuildKit from two rootfs tarballs
        local arm
        arm="$(arm64_busybox)"
        mkdir -p "$WORK"
        busybox_rootfs_tar "$bb" "$bb" "$WORK/busybox-amd64.tar"
        busybox_rootfs_tar "$arm" "$bb" "$WORK/busybox-arm64.tar"
        buildx_rootfs_image "$BUSYBOX_IMAGE" "$WORK/busybox-amd64.tar" "$WORK/busybox-arm64.tar" '["sh"]' "PATH=$IMAGE_PATH"
        rm -f "$WORK/busybox-amd64.tar" "$WORK/busybox-arm64.tar"
        local arch
        arch="$(docker run --rm --network none --platform linux/arm64 "$BUSYBOX_IMAGE" uname -m 2>&1)" \
            || die "image $BUSYBOX_IMAGE: the arm64 variant does not run (qemu?): $arch"
        [[ "$arch" == aarch64 ]] || die "image $BUSYBOX_IMAGE: arm64 variant reports '$arch'"
        arch="$(docker run --rm --network none --platform linux/arm64 "$BUSYBOX_IMAGE" sh -c 'uname -m | cat' 2>&1)"
        [[ "$arch" == aarch64 ]] || die "image $BUSYBOX_IMAGE: arm64 shell pipelines fail under qemu (binfmt flags?): $arch"
    else
        log "image $BUSYBOX_IMAGE: importing from $bb"
        local tarball="$WORK/busybox.tar"
        busybox_rootfs_tar "$bb" "$bb" "$tarball"
        docker import --change 'CMD ["sh"]' --change "ENV PATH=$IMAGE_PATH" \
            --message "flyimage busybox from $bb" "$tarball" "$BUSYBOX_IMAGE" >/dev/null \
            || { rm -f "$tarball"; die "image $BUSYBOX_IMAGE: docker import failed"; }
        rm -f "$tarball"
    fi
    docker run --rm --network none "$BUSYBOX_IMAGE" sh -c 'echo ok' >/dev/null \
        || die "image $BUSYBOX_IMAGE: imported but 'sh -c echo ok' fails"
    log "image $BUSYBOX_IMAGE: ready"
}

# first Debian archive URI of the host's apt sources for suite bookworm, else deb.debian.org
debian_mirror() {
    local f uri=""
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f "$f" ]] || continue
        uri="$(awk '$1 == "deb" { l = $0; gsub(/\[[^]]*\]/, " ", l); n = split(l, a, /[ \t]+/)
                                  if (a[3] == "bookworm") { print a[2]; exit } }' "$f")"
        [[ -n "$uri" ]] && { echo "$uri"; return; }
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f "$f" ]] || continue
        # deb822 stanzas: the first URI of a "deb" stanza whose Suites include "bookworm"
        uri="$(awk 'BEGIN { RS = ""; FS = "\n" }
            { uris = ""; suites = ""; types = ""
              for (i = 1; i <= NF; i++) {
                if ($i ~ /^URIs:/) { uris = $i; sub(/^URIs:[ \t]*/, "", uris) }
                if ($i ~ /^Suites:/) { suites = $i; sub(/^Suites:/, "", suites); suites = " " suites " "; gsub(/\t/, " ", suites) }
                if ($i ~ /^Types:/) { types = $i " " }
              }
              if (types ~ /[ \t]deb[ \t]/ && index(suites, " bookworm ") && uris != "") { split(uris, u, /[ \t]+/); print u[1]; exit } }' "$f")"
        [[ -n "$uri" ]] && { echo "$uri"; return; }
    done
    echo "http://deb.debian.org/debian"
}

unmount_under() {  # unmount anything mounted below $1 (deepest first)
    local dir=$1 m
    [[ -d "$dir" ]] || return 0
    while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done < <(awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r)
}

safe_rm_tree() {
    local dir=$1
    [[ -n "$dir" && "$dir" == "$WORK"/* ]] || die "refusing to remove $dir"
    unmount_under "$dir"
    rm -rf --one-file-system "$dir"
}

# Both arches install the same package set from the host's bookworm mirror.
PYTHON_DEBS="python3,python3-pip,python3-venv,ca-certificates"
PYTHON_ARM64_ROOTFS_KEY="python-3.11-bookworm-arm64-v1"   # bump to force a new arm64 rootfs

# The amd64 rootfs: a full debootstrap (maintainer scripts run natively).
debootstrap_amd64() {  # ROOT MIRROR LOG
    debootstrap --variant=minbase --include="$PYTHON_DEBS" bookworm "$1" "$2" >"$3" 2>&1
}

# The arm64 rootfs without emulation: debootstrap's first stage only downloads the arm64
# .debs and unpacks the required ones (no qemu); running the second stage under qemu took
# 1007 s (maintainer scripts, byte-compiling). Instead the remaining .debs are unpacked on
# the host and every package is registered in dpkg's database as installed (so apt-get
# works in images built from it). What the maintainer scripts made (users, alternatives,
# /etc/profile, CA links, debconf answers ...) is taken from the amd64 rootfs of the same
# packages, except anything architecture-specific; the linker cache is made by the arm64
# ldconfig, the one emulated step (well under a second).
debootstrap_arm64() {  # ROOT MIRROR LOG AMD64_TARBALL
    local root=$1 amd64=$4 pkg
    debootstrap --foreign --arch arm64 --variant=minbase --include="$PYTHON_DEBS" bookworm "$root" "$2" >"$3" 2>&1 \
        || return 1
    # inside a container debootstrap makes /proc a symlink; runc mounts proc on a directory
    if [[ -L "$root/proc" ]]; then rm -f "$root/proc" && mkdir -m 755 "$root/proc"; fi
    for pkg in $(cat "$root/debootstrap/base"); do
        dpkg-deb --fsys-tarfile "$(deb_path "$root" "$pkg")" | tar -C "$root" --keep-directory-symlink -xf - \
            || { log "image $PYTHON_IMAGE: unpacking $pkg (arm64) failed"; return 1; }
    done
    echo 1 >"$root/var/lib/dpkg/info/format"   # multiarch names (pkg:arm64.list)
    for pkg in $(cat "$root/debootstrap/required" "$root/debootstrap/base"); do
        dpkg_register "$root" "$(deb_path "$root" "$pkg")" || { log "image $PYTHON_IMAGE: registering $pkg failed"; return 1; }
    done
    maintainer_script_paths "$amd64" >"$WORK/postinst-paths"
    tar -C "$root" --keep-directory-symlink --no-recursion -xf "$amd64" -T "$WORK/postinst-paths" \
        || { log "image $PYTHON_IMAGE: copying the maintainer scripts' files from $amd64 failed"; return 1; }
    rm -f "$WORK/postinst-paths"
    chroot "$root" /sbin/ldconfig || { log "image $PYTHON_IMAGE: ldconfig (arm64, qemu) failed"; return 1; }
}

# Paths in a rootfs tarball that no package owns (its dpkg file lists, merged /usr): what
# the maintainer scripts made. Without dpkg's own database and anything arch-specific.
maintainer_script_paths() {  # ROOTFS_TARBALL
    local tarball=$1 lists
    lists="$(mktemp -d "$WORK/dpkg-lists.XXXXXX")"
    tar -C "$lists" -xf "$tarball" --wildcards './var/lib/dpkg/info/*.list'
    cat "$lists"/var/lib/dpkg/info/*.list | sed -E 's@^/(bin|sbin|lib|lib64)(/|$)@/usr/\1\2@' | sed 's@^@.@' | sort -u >"$lists/owned"
    tar -tf "$tarball" | sed 's@/$@@' | sort -u >"$lists/all"
    comm -23 "$lists/all" "$lists/owned" \
        | grep -v -E '^\.$|^\./(bin|sbin|lib|lib32|lib64|libx32)$|^\./(var/lib/dpkg|var/cache/apt|var/cache/ldconfig|var/log|dev|proc|sys|tmp|run)(/|$)|^\./etc/ld\.so\.cache$|x86_64|x86-64|amd64' \
        || true
    rm -rf "$lists"
}

deb_path() {  # ROOT PACKAGE -> the .deb debootstrap downloaded for it
    local p
    p="$(awk -v p="$2" '$1 == p { print $2; exit }' "$1/debootstrap/debpaths")"
    [[ -n "$p" && -f "$1$p" ]] || die "image $PYTHON_IMAGE: no .deb for $2 in $1/debootstrap/debpaths"
    echo "$1$p"
}

# What `dpkg --install` records, without running the maintainer scripts: the status
# stanza (with conffiles), the file list and the control files in /var/lib/dpkg/info.
dpkg_register() {  # ROOT DEB
    local root=$1 deb=$2 ctl name f c
    local db="$root/var/lib/dpkg"
    ctl="$(mktemp -d "$WORK/dpkg-ctl.XXXXXX")"
    dpkg-deb -e "$deb" "$ctl" || { rm -rf "$ctl"; return 1; }
    name="$(sed -n 's/^Package: //p' "$ctl/control")"
    if grep -q '^Multi-Arch: same' "$ctl/control"; then
        name="$name:$(sed -n 's/^Architecture: //p' "$ctl/control")"
    fi
    {
        sed '1a Status: install ok installed' "$ctl/control"
        if [[ -s "$ctl/conffiles" ]]; then
            echo "Conffiles:"
            while read -r c _; do
                [[ -f "$root$c" ]] && echo " $c $(md5sum <"$root$c" | cut -d' ' -f1)"
            done <"$ctl/conffiles"
        fi
        echo
    } >>"$db/status"
    dpkg-deb --fsys-tarfile "$deb" | tar -t | sed -e 's|^\./|/|' -e 's|/$||' -e 's|^$|/.|' >"$db/info/$name.list"
    for f in "$ctl"/*; do
        [[ "${f##*/}" == control ]] || cp -p "$f" "$db/info/$name.${f##*/}"
    done
    rm -rf "$ctl"
}

build_python_rootfs() {  # TARBALL ARCH(amd64|arm64) [AMD64_TARBALL, for arm64]
    local tarball=$1 arch=$2 mirror root logf="$STATE/debootstrap-$2.log" t0=$SECONDS
    mirror="$(debian_mirror)"
    mkdir -p "$WORK" "$CACHE"
    root="$WORK/python-rootfs-$arch"
    [[ -e "$root" ]] && safe_rm_tree "$root"
    mkdir -p "$root"
    log "image $PYTHON_IMAGE: debootstrap bookworm $arch from $mirror (about a minute; log $logf)"
    if ! "debootstrap_$arch" "$root" "$mirror" "$logf" "${3:-}"; then
        unmount_under "$root"
        tail_log "$logf"
        [[ -f "$root/debootstrap/debootstrap.log" ]] && tail_log "$root/debootstrap/debootstrap.log"
        die "image $PYTHON_IMAGE: debootstrap $arch failed (see $logf)"
    fi
    unmount_under "$root"
    # the host's CA bundle and extra CAs (so TLS works the same inside, e.g. for pip)
    if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
        cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    fi
    if compgen -G '/usr/local/share/ca-certificates/*' >/dev/null; then
        mkdir -p "$root/usr/local/share/ca-certificates"
        cp -r /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
    fi
    # the host's apt sources (so apt-get inside builds reaches the same mirror); only
    # files apt reads, whose keyrings exist in the image
    local f k ok
    # debootstrap's own sources.list would duplicate the host's entries
    rm -f "$root/etc/apt/sources.list"
    if [[ -f /etc/apt/sources.list ]]; then cp /etc/apt/sources.list "$root/etc/apt/sources.list"; fi
    for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [[ -f "$f" ]] || continue
        ok=1
        while read -r k; do
            [[ -e "$root$k" ]] || ok=0
        done < <(grep -o -i -E '(signed-by[:=] *)(/[^] ]+)' "$f" | sed -E 's/^[Ss]igned-[Bb]y[:=] *//')
        if [[ $ok == 1 ]]; then cp "$f" "$root/etc/apt/sources.list.d/"; fi
    done
    if [[ ! -s "$root/etc/apt/sources.list" ]] && ! compgen -G "$root/etc/apt/sources.list.d/*" >/dev/null; then
        echo "deb $mirror bookworm main" >"$root/etc/apt/sources.list"
    fi
    # behave like the official python images: `python` exists, `pip install` is allowed
    ln -sf python3 "$root/usr/bin/python"
    [[ -e "$root/usr/bin/pip" ]] || ln -sf pip3 "$root/usr/bin/pip"
    rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
    # slim it down
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* \
        "$root"/debootstrap "$root"/var/log/*.log "$root"/etc/hostname "$root"/usr/share/doc/* \
        "$root"/usr/share/man/* "$root"/usr/share/locale/*
    find "$root/usr/lib" -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null || true
    : >"$root/etc/resolv.conf"
    log "image $PYTHON_IMAGE: packing the $arch rootfs into $tarball ($((SECONDS - t0))s)"
    tar --numeric-owner -C "$root" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
        -cf "$tarball.tmp" . || die "image $PYTHON_IMAGE: tar of the rootfs failed"
    mv "$tarball.tmp" "$tarball"
    safe_rm_tree "$root"
}

ensure_python_image() {
    if image_present "$PYTHON_IMAGE" && has_arm64_variant "$PYTHON_IMAGE"; then
        log "image $PYTHON_IMAGE: present"
        return 0
    fi
    image_present "$PYTHON_IMAGE" && log "image $PYTHON_IMAGE: present but without linux/arm64; rebuilding"
    local tarball="$CACHE/$PYTHON_ROOTFS_KEY.tar"
    if [[ -s "$tarball" ]]; then
        log "image $PYTHON_IMAGE: using cached rootfs $tarball"
    else
        build_python_rootfs "$tarball" amd64
    fi
    if [[ "$FLYIMAGE_DOCKER" == modern ]]; then
        # keyed by the amd64 rootfs too: its maintainer-script files are part of the arm64 one
        local arm64="$CACHE/$PYTHON_ROOTFS_KEY-$PYTHON_ARM64_ROOTFS_KEY.tar"
        if [[ -s "$arm64" ]]; then
            log "image $PYTHON_IMAGE: using cached arm64 rootfs $arm64"
        else
            build_python_rootfs "$arm64" arm64 "$tarball"
        fi
        buildx_rootfs_image "$PYTHON_IMAGE" "$tarball" "$arm64" '["python3"]' "PATH=$IMAGE_PATH" LANG=C.UTF-8
    else
        log "image $PYTHON_IMAGE: importing"
        docker import --change "ENV PATH=$IMAGE_PATH" --change 'ENV LANG=C.UTF-8' \
            --change 'CMD ["python3"]' --message "flyimage debootstrap bookworm minbase + python3" \
            "$tarball" "$PYTHON_IMAGE" >/dev/null \
            || die "image $PYTHON_IMAGE: docker import of $tarball failed (delete it to rebuild)"
    fi
    local v platform
    for platform in $(image_platforms); do
        v="$(docker run --rm --network none --platform "$platform" "$PYTHON_IMAGE" \
            python -c 'import platform, sys; print("%d.%d" % sys.version_info[:2], platform.machine())' 2>&1)" \
            || die "image $PYTHON_IMAGE: python does not run on $platform: $v"
        [[ "$v" == "3.11 $(platform_machine "$platform")" ]] || die "image $PYTHON_IMAGE: expected python 3.11 on $platform, got '$v'"
    done
    log "image $PYTHON_IMAGE: ready (python 3.11 on $(image_platforms | tr '\n' ' ' | sed 's/ $//'))"
}

image_platforms() {  # the platforms every base image holds on this stack
    echo linux/amd64
    [[ "$FLYIMAGE_DOCKER" != modern ]] || echo linux/arm64
}

platform_machine() {  # linux/amd64 -> x86_64 (what `uname -m` says there)
    case "$1" in linux/amd64) echo x86_64 ;; linux/arm64) echo aarch64 ;; *) die "no machine name for $1" ;; esac
}

has_arm64_variant() {  # IMAGE: true on the classic stack; on the modern one, its arm64 variant runs
    [[ "$FLYIMAGE_DOCKER" != modern ]] || docker run --rm --network none --platform linux/arm64 "$1" true >/dev/null 2>&1
}

# One tag holding linux/amd64 and linux/arm64 (an image index in the containerd store),
# from a rootfs tarball per platform, by BuildKit.
buildx_rootfs_image() {  # TAG AMD64_TAR ARM64_TAR CMD_JSON [ENV_ASSIGNMENT...]
    local tag=$1 amd64=$2 arm64=$3 cmd=$4 e
    shift 4
    local ctx="$WORK/rootfs-context" logf="$STATE/rootfs-build.log" t0=$SECONDS
    rm -rf "$ctx" && mkdir -p "$ctx"
    ln "$amd64" "$ctx/rootfs-amd64.tar" 2>/dev/null || cp "$amd64" "$ctx/rootfs-amd64.tar"
    ln "$arm64" "$ctx/rootfs-arm64.tar" 2>/dev/null || cp "$arm64" "$ctx/rootfs-arm64.tar"
    {
        printf 'FROM scratch\nARG TARGETARCH\nADD rootfs-${TARGETARCH}.tar /\n'
        for e in "$@"; do printf 'ENV %s\n' "$e"; done
        printf 'CMD %s\n' "$cmd"
    } >"$ctx/Dockerfile"
    log "image $tag: buildx build --platform linux/amd64,linux/arm64 (a rootfs tarball each)"
    docker buildx build -q --platform linux/amd64,linux/arm64 --provenance=false --load -t "$tag" "$ctx" \
        >"$logf" 2>&1 || { tail_log "$logf"; rm -rf "$ctx"; die "image $tag: buildx build failed (see $logf)"; }
    rm -rf "$ctx"
    log "image $tag: built for linux/amd64 and linux/arm64 in $((SECONDS - t0))s"
}

ensure_prefect_image() {
    local tag=$1 version=$2
    if image_present "$tag" && has_arm64_variant "$tag"; then
        log "image $tag: present"
        return 0
    fi
    image_present "$tag" && log "image $tag: present but without linux/arm64; rebuilding"
    local pd uvv reqs
    pd="$(host_dist_version prefect-docker)"
    uvv="$(host_dist_version uv)"
    reqs=("prefect==$version" "$FASTAPI_SPEC" "uv${uvv:+==$uvv}" "prefect-docker${pd:+==$pd}")
    # a `docker save` of an earlier build (for a fresh daemon with the same state dir)
    # keyed by tag, so stand-ins for several Prefect versions (scripts/test.sh's compat run) coexist
    local slug platforms
    slug="$(printf '%s' "$tag" | tr -c 'A-Za-z0-9._-' '_')"
    platforms="$(image_platforms | tr '\n' ,)"
    local saved="$CACHE/prefect-image-$slug-$PYTHON_ROOTFS_KEY-$(printf '%s' "$tag ${reqs[*]} $platforms" | md5sum | cut -c1-12).tar"
    if [[ -s "$saved" ]]; then
        log "image $tag: loading $saved"
        local t0=$SECONDS
        if docker load -q -i "$saved" >/dev/null 2>&1 && image_present "$tag" && has_arm64_variant "$tag"; then
            log "image $tag: loaded in $((SECONDS - t0))s"
            return 0
        fi
        log "image $tag: load failed; rebuilding"
        rm -f "$saved"
    fi
    local wh="$CACHE/wheels-prefect-$version"
    local stamp="$wh/.complete"
    if [[ ! -f "$stamp" ]] || [[ "$(cat "$stamp")" != "${reqs[*]}" ]]; then
        log "image $tag: building a wheelhouse for ${reqs[*]} in $wh (network: host, PyPI)"
        rm -rf "$wh"
        mkdir -p "$wh"
        # Resolve and build the wheels in the target image itself, so they fit its python.
        if ! docker run --rm --network host -v "$wh:/wheels" \
            -e PIP_CERT=/etc/ssl/certs/ca-certificates.crt -e PIP_DISABLE_PIP_VERSION_CHECK=1 \
            -e PIP_DEFAULT_TIMEOUT=120 \
            "$PYTHON_IMAGE" sh -c 'python3 -m venv /tmp/v && /tmp/v/bin/pip wheel -q --wheel-dir /wheels "$@"' sh "${reqs[@]}" \
            >"$STATE/wheelhouse.log" 2>&1; then
            tail_log "$STATE/wheelhouse.log"
            die "image $tag: pip wheel failed (see $STATE/wheelhouse.log)"
        fi
        printf '%s' "${reqs[*]}" >"$stamp"
    fi
    local ctx="$WORK/prefect-context"
    rm -rf "$ctx"
    mkdir -p "$ctx"
    cp -al "$wh" "$ctx/wheels" 2>/dev/null || cp -a "$wh" "$ctx/wheels"
    local quoted="" r
    for r in "${reqs[@]}"; do quoted+=" '$r'"; done
    local t0=$SECONDS
    if [[ "$FLYIMAGE_DOCKER" == modern ]]; then
        arm64_prefect_venv "$tag" "$wh" "$ctx/venv-arm64"
        prefect_dockerfile "$version" "$quoted" arm64 >"$ctx/Dockerfile"
        log "image $tag: buildx build --platform linux/amd64,linux/arm64 (prefect $version)"
        if ! docker buildx build --platform linux/amd64,linux/arm64 --provenance=false --network host --load \
            -t "$tag" "$ctx" >"$STATE/prefect-build.log" 2>&1; then
            tail_log "$STATE/prefect-build.log"
            die "image $tag: buildx build failed (see $STATE/prefect-build.log)"
        fi
    else
        prefect_dockerfile "$version" "$quoted" >"$ctx/Dockerfile"
        log "image $tag: docker build (prefect $version)"
        if ! docker build --network host -t "$tag" "$ctx" >"$STATE/prefect-build.log" 2>&1; then
            tail_log "$STATE/prefect-build.log"
            die "image $tag: docker build failed (see $STATE/prefect-build.log)"
        fi
    fi
    rm -rf "$ctx"
    docker image prune -f --filter label=io.flyimage.stage=prefect-install >/dev/null 2>&1 || true
    local out
    out="$(docker run --rm --network none "$tag" prefect version 2>&1)" \
        || { docker rmi -f "$tag" >/dev/null 2>&1 || true; die "image $tag: 'prefect version' fails: $out"; }
    out="$(docker run --rm --network none "$tag" uv --version 2>&1)" \
        || { docker rmi -f "$tag" >/dev/null 2>&1 || true; die "image $tag: 'uv --version' fails: $out"; }
    [[ "$FLYIMAGE_DOCKER" != modern ]] || smoke_test_arm64_prefect "$tag" "$version"
    log "image $tag: built in $((SECONDS - t0))s ($out); saving it to $saved"
    rm -f "$CACHE/prefect-image-$slug-"*.tar
    docker save -o "$saved.tmp" "$tag" && mv "$saved.tmp" "$saved" || { rm -f "$saved.tmp"; log "image $tag: docker save failed (not fatal)"; }
}

prefect_dockerfile() {  # VERSION QUOTED_REQS [arm64]: the stand-in's Dockerfile
    local version=$1 quoted=$2
    echo "# Stand-in for the official Prefect image (nothing can be pulled here)."
    if [[ -n "${3:-}" ]]; then
        cat <<EOF
# One tag for linux/amd64 and linux/arm64: each platform's venv comes from its own stage.
FROM $PYTHON_IMAGE AS install-amd64
LABEL io.flyimage.stage=prefect-install
COPY wheels /wheels
RUN python3 -m venv /opt/prefect-venv \\
 && /opt/prefect-venv/bin/pip install -q --no-cache-dir --disable-pip-version-check \\
      --no-index --find-links /wheels$quoted

# arm64: the venv made by the arm64 python (a few seconds under qemu), its packages
# installed on the host from aarch64 wheels of the same versions (scripts/bases.sh)
FROM $PYTHON_IMAGE AS install-arm64
RUN python3 -m venv --without-pip /opt/prefect-venv
COPY venv-arm64/ /opt/prefect-venv/

FROM install-\${TARGETARCH} AS install
EOF
    else
        cat <<EOF
FROM $PYTHON_IMAGE AS install
LABEL io.flyimage.stage=prefect-install
COPY wheels /wheels
RUN python3 -m venv /opt/prefect-venv \\
 && /opt/prefect-venv/bin/pip install -q --no-cache-dir --disable-pip-version-check \\
      --no-index --find-links /wheels$quoted
EOF
    fi
    cat <<EOF

FROM $PYTHON_IMAGE
COPY --from=install /opt/prefect-venv /opt/prefect-venv
ENV VIRTUAL_ENV=/opt/prefect-venv \\
    PATH=/opt/prefect-venv/bin:$IMAGE_PATH \\
    LANG=C.UTF-8
WORKDIR /opt/prefect
LABEL io.flyimage.standin=prefect io.flyimage.prefect-version=$version
CMD ["python3"]
EOF
}

# pip's --platform takes exact tags: every manylinux tag bookworm's glibc (2.36) accepts
aarch64_pip_target() {
    local v
    for v in $(seq 36 -1 17); do printf -- '--platform\nmanylinux_2_%s_aarch64\n' "$v"; done
    printf -- '--platform\nmanylinux2014_aarch64\n--python-version\n3.11\n--implementation\ncp\n--abi\ncp311\n--only-binary=:all:\n'
}

# The aarch64 twin of the amd64 wheelhouse: the same versions; pure wheels shared, the
# others fetched for manylinux aarch64 by the host's pip (no emulation).
arm64_wheelhouse() {  # TAG AMD64_WHEELHOUSE -> path
    local tag=$1 wh=$2 out="$2-arm64" w f dist ver want specs=() target=()
    want="$(cd "$wh" && ls -- *.whl | md5sum | cut -c1-12)"
    if [[ -f "$out/.complete" && "$(cat "$out/.complete")" == "$want" ]]; then
        echo "$out"
        return 0
    fi
    rm -rf "$out" && mkdir -p "$out"
    for w in "$wh"/*.whl; do
        f=${w##*/}
        if [[ "$f" == *-none-any.whl ]]; then
            ln "$w" "$out/$f" 2>/dev/null || cp "$w" "$out/$f"
        else
            IFS=- read -r dist ver _ <<<"$f"
            specs+=("$dist==$ver")
        fi
    done
    mapfile -t target < <(aarch64_pip_target)
    log "image $tag: fetching aarch64 wheels of ${#specs[@]} packages into $out (host pip, PyPI)"
    if ((${#specs[@]})) && ! python3 -m pip download -q --disable-pip-version-check --no-deps --dest "$out" "${target[@]}" \
        "${specs[@]}" >"$STATE/wheelhouse-arm64.log" 2>&1; then
        tail_log "$STATE/wheelhouse-arm64.log"
        die "image $tag: no aarch64 wheel for one of ${specs[*]} (see $STATE/wheelhouse-arm64.log)"
    fi
    printf '%s' "$want" >"$out/.complete"
    echo "$out"
}

# The arm64 venv's content, made on the host: the aarch64 wheels (and the pip and
# setuptools wheels Debian's ensurepip installs) unpacked by the host's pip into the
# venv's layout, console scripts pointed at the venv's python, byte-compiled by the
# host's python 3.11 (bytecode does not depend on the architecture). Installing them
# with pip under qemu took 287 s; this takes seconds.
arm64_prefect_venv() {  # TAG AMD64_WHEELHOUSE OUT_DIR
    local tag=$1 out=$3 arm tmp f target=()
    arm="$(arm64_wheelhouse "$tag" "$2")"
    tmp="$(mktemp -d "$WORK/venv-arm64.XXXXXX")"
    tar -C "$tmp" -xf "$CACHE/$PYTHON_ROOTFS_KEY.tar" --wildcards './usr/share/python-wheels/*.whl' \
        || die "image $tag: no ensurepip wheels in $CACHE/$PYTHON_ROOTFS_KEY.tar"
    mapfile -t target < <(aarch64_pip_target)
    python3 -m pip install -q --disable-pip-version-check --no-deps --no-index --no-compile --target "$tmp/site" \
        "${target[@]}" "$arm"/*.whl "$tmp"/usr/share/python-wheels/*.whl >"$STATE/venv-arm64.log" 2>&1 \
        || { tail_log "$STATE/venv-arm64.log"; die "image $tag: installing the aarch64 wheels failed (see $STATE/venv-arm64.log)"; }
    local site="$out/lib/python3.11/site-packages"
    mkdir -p "$site" "$out/bin" "$out/include/site/python3.11"
    mv "$tmp/site/bin"/* "$out/bin/"
    if [[ -d "$tmp/site/include/python" ]]; then mv "$tmp/site/include/python"/* "$out/include/site/python3.11/"; fi
    rm -rf "$tmp/site/bin" "$tmp/site/include"
    mv "$tmp/site"/* "$site/"
    for f in "$out/bin"/*; do
        if [[ "$(head -c 2 "$f")" == '#!' ]]; then sed -i '1s|^#!.*python.*$|#!/opt/prefect-venv/bin/python3|' "$f"; fi
    done
    if [[ "$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')" == 3.11 ]]; then
        # as pip does when it installs: a file that does not compile (a template, a py2
        # leftover) is left as it is
        python3 -m compileall -q -j 0 -s "$out" -p /opt/prefect-venv "$site" >/dev/null || true
    fi
    rm -rf "$tmp"
}

smoke_test_arm64_prefect() {  # TAG VERSION: the arm64 variant imports prefect (under qemu)
    local tag=$1 version=$2 out t0=$SECONDS
    out="$(docker run --rm --network none --platform linux/arm64 "$tag" \
        python -c 'import platform, prefect, prefect_docker; print(platform.machine(), prefect.__version__)' 2>&1)" \
        || { docker rmi -f "$tag" >/dev/null 2>&1 || true; die "image $tag: arm64 'import prefect' fails: $out"; }
    [[ "$(echo "$out" | tail -n 1)" == "aarch64 $version" ]] \
        || { docker rmi -f "$tag" >/dev/null 2>&1 || true; die "image $tag: arm64 variant says '$out'"; }
    out="$(docker run --rm --network none --platform linux/arm64 "$tag" uv --version 2>&1)" \
        || { docker rmi -f "$tag" >/dev/null 2>&1 || true; die "image $tag: arm64 'uv --version' fails: $out"; }
    log "image $tag: arm64 variant imports prefect $version under qemu in $((SECONDS - t0))s ($out)"
}
