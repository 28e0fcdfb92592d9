#!/bin/sh
# A local Python base image for `make image` on machines that pull from no registry: Debian minbase
# (mmdebstrap, from this machine's own apt sources) with Debian's python3, imported into podman as
# TAG. On bookworm that is Python 3.11, what python:3.11-slim gives. Skipped when TAG exists.
#   image/base.sh localhost/opsctl-base:bookworm
set -eu
tag=${1:?usage: image/base.sh TAG}
if podman image exists "$tag"; then
  echo "base image $tag: present"
  exit 0
fi
. /etc/os-release
suite=${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release: not Debian}
sources=/etc/apt/sources.list.d/debian.sources
[ -f "$sources" ] || sources=/etc/apt/sources.list
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
echo "base image $tag: mmdebstrap $suite from $sources (about 2 minutes)"
# like debian:*-slim: no manuals, docs or translations (copyright files stay); /usr merged by the hook,
# not by the usrmerge package (which pulls in perl)
mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates,passwd \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
  --aptopt='Acquire::Retries "3"' --aptopt='APT::Install-Recommends "false"' \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  "$suite" "$tmp/base.tar" "$sources" >"$tmp/mmdebstrap.log" 2>&1 || {
  tail -n 40 "$tmp/mmdebstrap.log" >&2
  echo "base image $tag: mmdebstrap failed (its log above)" >&2
  exit 1
}
podman import --quiet --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' "$tmp/base.tar" "$tag" >/dev/null
echo "base image $tag: built"
