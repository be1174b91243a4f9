#!/usr/bin/env bash
# A local stand-in for the official python:3.11-slim, for machines that cannot reach an image
# registry (CI here): Debian 12 minbase (its python3 is 3.11) with python3-venv,
# python-is-python3 and ca-certificates, made by debootstrap from this machine's Debian mirror
# and imported into podman once (a second run finds it and returns at once).
# pip inside image builds trusts this machine's CA bundle (copied in under another name,
# because ca-certificates in the image owns /etc/ssl/certs/ca-certificates.crt).
#   tests/compose/base-image.sh [TAG]     default TAG: localhost/cifar10-base:bookworm-python3.11
set -euo pipefail
tag=${1:-localhost/cifar10-base:bookworm-python3.11}
if podman image exists "$tag"; then
  echo "base image $tag: present"
  exit 0
fi
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
mirror=${mirror:-http://deb.debian.org/debian}
root=$(mktemp -d /var/tmp/cifar10-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "base image $tag: debootstrap bookworm from $mirror (about a minute, once)"
debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
  bookworm "$root" "$mirror" >"$root.log" 2>&1 || { tail -n 20 "$root.log"; exit 1; }
rm -f "$root.log"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/host-ca-bundle.pem"
printf '[global]\ncert = /etc/ssl/certs/host-ca-bundle.pem\n' >"$root/etc/pip.conf"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | podman import --quiet --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$tag" >/dev/null
echo "base image $tag: made ($(podman image inspect --format '{{.Size}}' "$tag" | numfmt --to=iec) )"
