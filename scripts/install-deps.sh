#!/bin/sh
# Install the Debian 12 packages veer builds with and tests against, when any
# is missing. Needs root (or sudo) only when something has to be installed.
set -e
PKGS="build-essential cmake pkg-config libevent-dev libssl-dev libnghttp2-dev libcjson-dev node-llhttp
      python3 python3-h2 curl nghttp2-client wrk haproxy nginx-light prometheus openssl procps
      chromium fonts-dejavu-core yamllint python3-yaml systemd"
# test_deploy renders the kustomize overlays with `kubectl kustomize`: Debian's
# kubectl 1.20 (kubernetes-client) unless a kubectl is installed already
# (another package's /usr/bin/kubectl would conflict with it).
command -v kubectl >/dev/null 2>&1 || PKGS="$PKGS kubernetes-client"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing:$missing"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends $missing
