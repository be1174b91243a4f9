#!/usr/bin/env bash
# What `make compose-test` needs on a Debian 12 machine without Docker: podman (with runc),
# buildah, debootstrap (for the local base image) and Debian's docker-compose 1.29, installed
# when missing (as root), and podman's settings for a sandbox without CAP_SYS_RESOURCE and
# with hybrid cgroups: lowered default ulimits, the runc runtime (crun refuses hybrid
# cgroups). Both settings go into /etc/containers/containers.conf when it does not exist.
set -euo pipefail
missing=()
for tool in podman buildah debootstrap docker-compose runc; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "compose-test: missing ${missing[*]}: install them (Debian: apt-get install podman buildah debootstrap docker-compose runc) or run as root" >&2
    exit 1
  fi
  echo "compose-test: installing Debian's ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends podman buildah debootstrap docker-compose runc \
    uidmap slirp4netns fuse-overlayfs netavark aardvark-dns containernetworking-plugins iptables >/dev/null
fi
conf=/etc/containers/containers.conf
if [ ! -e "$conf" ] && [ "$(id -u)" = 0 ]; then
  mkdir -p "$(dirname "$conf")"
  cat >"$conf" <<'CONF'
# written by cifar10-serving's tests/compose/host-setup.sh
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]

[engine]
runtime = "runc"
CONF
  echo "compose-test: wrote $conf (runc, lowered ulimits)"
fi
echo "compose-test: $(podman --version), docker-compose $(docker-compose version --short)"
