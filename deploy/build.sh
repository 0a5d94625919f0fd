#!/bin/sh
# build.sh — the container image's build steps as one script, so that
# deploy/Dockerfile and tests/integration/test_deploy.py run the same commands
# (no Docker engine runs on the CI machines). Usage: deploy/build.sh COMMAND ...
set -eu

# The only shared libraries the runtime image installs, and the Debian 12
# packages that ship them: runtime-deps installs exactly these, runtime-check
# refuses a binary that needs anything else.
RUNTIME_PKGS="libevent-2.1-7 libevent-pthreads-2.1-7 libevent-openssl-2.1-7 libssl3 libnghttp2-14 libcjson1"
BUILD_PKGS="build-essential cmake pkg-config libevent-dev libssl-dev libnghttp2-dev libcjson-dev node-llhttp"
ALLOWED_SONAMES="linux-vdso.so.1 ld-linux-x86-64.so.2 ld-linux-aarch64.so.1 libc.so.6 libm.so.6 libpthread.so.0
 libevent-2.1.so.7 libevent_pthreads-2.1.so.7 libevent_openssl-2.1.so.7 libssl.so.3 libcrypto.so.3
 libnghttp2.so.14 libcjson.so.1"
ALLOWED_OWNERS="libc6 $RUNTIME_PKGS"
VEER_UID=10001

usage() {
    cat >&2 <<'EOF'
usage: deploy/build.sh COMMAND
  build-deps                     apt-get install the build packages (Docker build stage)
  build SRC BUILDDIR             release build (cmake -DVEER_RELEASE=ON) of the tree SRC
  install SRC BUILDDIR PREFIX    lay out the image's files under PREFIX (bin, config, this script)
  runtime-deps                   apt-get install only the runtime libraries (runtime stage)
  user                           create the non-root user veer (uid 10001) and its state dir
  runtime-check PREFIX           PREFIX/usr/local/bin/veer runs, checks the shipped configs,
                                 and links only the runtime libraries
  healthcheck [HOST:PORT]        exit 0 when GET /healthz answers 200 (default 127.0.0.1:9901)
EOF
    exit 2
}

die() {
    echo "build.sh: $*" >&2
    exit 1
}

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "$@"
    # the image layer keeps no package lists
    rm -rf /var/lib/apt/lists/*
}

cmd_build() {
    [ $# -eq 2 ] || usage
    src=$1 builddir=$2
    jobs=${BUILD_JOBS:-2}
    cmake -S "$src" -B "$builddir" -DVEER_RELEASE=ON -DVEER_SANITIZE=OFF >/dev/null
    cmake --build "$builddir" -j"$jobs" --target veer
}

cmd_install() {
    [ $# -eq 3 ] || usage
    src=$1 builddir=$2 prefix=$3
    install -D -m 0755 "$builddir/veer" "$prefix/usr/local/bin/veer"
    strip --strip-unneeded "$prefix/usr/local/bin/veer" 2>/dev/null || true
    install -D -m 0755 "$src/deploy/build.sh" "$prefix/usr/local/libexec/veer/build.sh"
    install -D -m 0644 "$src/config/sidecar.json" "$prefix/etc/veer/veer.json"
    for f in "$src"/config/*.json; do
        install -D -m 0644 "$f" "$prefix/usr/local/share/veer/examples/$(basename "$f")"
    done
}

cmd_user() {
    getent group veer >/dev/null || groupadd --system --gid "$VEER_UID" veer
    getent passwd veer >/dev/null ||
        useradd --system --uid "$VEER_UID" --gid veer --home-dir /var/lib/veer \
            --no-create-home --shell /usr/sbin/nologin veer
    # state_file lives here; the image declares it a volume so the root fs can be read-only
    install -d -m 0750 -o veer -g veer /var/lib/veer
}

# The Debian package that owns a library path (merged /usr: dpkg may know
# either spelling), or nothing.
owner_of() {
    for p in "$1" "$(readlink -f "$1")"; do
        for q in "$p" "/usr$p" "${p#/usr}"; do
            o=$(dpkg-query -S "$q" 2>/dev/null | head -n 1 | cut -d: -f1) || true
            if [ -n "$o" ]; then
                echo "$o"
                return 0
            fi
        done
    done
}

cmd_runtime_check() {
    [ $# -eq 1 ] || usage
    prefix=$1
    veer=$prefix/usr/local/bin/veer
    [ -x "$veer" ] || die "no executable $veer"
    v=$("$veer" version) || die "veer version failed"
    case $v in veer\ [0-9]*) ;; *) die "veer version printed '$v'" ;; esac
    echo "ok: $v"
    n=0
    for f in "$prefix/etc/veer/veer.json" "$prefix"/usr/local/share/veer/examples/*.json; do
        "$veer" check -c "$f" >/dev/null || die "veer check -c $f failed"
        n=$((n + 1))
    done
    echo "ok: veer check passes on $n shipped configs"
    libs=$(ldd "$veer") || die "ldd $veer failed"
    if echo "$libs" | grep -q "not found"; then
        die "missing libraries: $(echo "$libs" | grep "not found")"
    fi
    bad=""
    for so in $(echo "$libs" | awk '{print $1}'); do
        base=$(basename "$so")
        case " $(echo $ALLOWED_SONAMES) " in *" $base "*) ;; *) bad="$bad $base" ;; esac
    done
    [ -z "$bad" ] || die "links libraries outside the runtime set:$bad"
    # each resolved library must come from one of the runtime packages (or libc6)
    for path in $(echo "$libs" | awk '$2 == "=>" {print $3} $1 ~ /^\// {print $1}'); do
        own=$(owner_of "$path")
        [ -n "$own" ] || die "no Debian package owns $path"
        case " $ALLOWED_OWNERS " in *" $own "*) ;; *) die "$path comes from $own, not a runtime package" ;; esac
    done
    echo "ok: links only$(echo "$libs" | awk '{printf " %s", $1}')"
}

# Docker's HEALTHCHECK: the runtime image has no curl, so speak HTTP/1.0 over
# bash's /dev/tcp; only a 200 status line counts.
cmd_healthcheck() {
    addr=${1:-127.0.0.1:9901}
    host=${addr%:*} port=${addr##*:}
    timeout 3 bash -c '
        exec 3<>"/dev/tcp/$0/$1" || exit 1
        printf "GET /healthz HTTP/1.0\r\nHost: %s\r\n\r\n" "$0" >&3
        IFS= read -r line <&3 || exit 1
        case $line in "HTTP/1."[01]" 200 "*) exit 0 ;; *) exit 1 ;; esac
    ' "$host" "$port"
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case $cmd in
build-deps) apt_install $BUILD_PKGS ;;
build) cmd_build "$@" ;;
install) cmd_install "$@" ;;
runtime-deps) apt_install $RUNTIME_PKGS ;;
user) cmd_user ;;
runtime-check) cmd_runtime_check "$@" ;;
healthcheck) cmd_healthcheck "$@" ;;
*) usage ;;
esac
