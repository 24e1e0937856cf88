#!/usr/bin/env bash
# Installs everything screener's demo and tests need on a fresh Debian 12 machine (run as root).
# Idempotent: a second run only checks what is already there.
#   - Debian packages: redis-server, SIPp, Prometheus (with promtool), espeak-ng, debootstrap
#   - Asterisk 22 (not packaged for Debian 12) in a chroot built from Debian sid by debootstrap
#   - a Python virtual environment in .venv with screener and its development tools
set -euo pipefail
cd "$(dirname "$0")/.."

LAB_DIR=${SCREENER_LAB_DIR:-/var/lib/screener-lab}
ROOTFS="$LAB_DIR/asterisk-root"
DEB_PACKAGES=(redis-server sip-tester prometheus espeak-ng debootstrap python3-venv tcpdump)

need_apt=0
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_apt=1
done
if [ "$need_apt" = 1 ]; then
  echo "setup: installing Debian packages: ${DEB_PACKAGES[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${DEB_PACKAGES[@]}" >/dev/null
fi

# The Debian mirror this machine already uses (deb822 "URIs:" or one-line "deb URL suite" form).
debian_mirror() {
  local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
  local url
  url=$(grep -hsE '^\s*URIs:' "${files[@]}" | awk '{print $2}' | grep -v security | head -n1 || true)
  [ -n "$url" ] || url=$(grep -hsE '^\s*deb\s' "${files[@]}" | awk '{print $2}' | grep -v security | head -n1 || true)
  echo "$url"
}

if [ ! -f "$ROOTFS/.screener-ready" ]; then
  mirror=$(debian_mirror)
  [ -n "$mirror" ] || { echo "setup: no Debian mirror found in /etc/apt sources" >&2; exit 1; }
  echo "setup: building the Asterisk 22 chroot in $ROOTFS (Debian sid, takes about a minute)"
  rm -rf "$ROOTFS"
  mkdir -p "$LAB_DIR"
  debootstrap --variant=minbase \
    --include=asterisk,asterisk-modules,asterisk-config,asterisk-core-sounds-en \
    sid "$ROOTFS" "$mirror" >"$LAB_DIR/debootstrap.log" 2>&1 \
    || { tail -n 30 "$LAB_DIR/debootstrap.log" >&2; exit 1; }
  chroot "$ROOTFS" asterisk -V
  touch "$ROOTFS/.screener-ready"
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import screener, pytest" 2>/dev/null || [ pyproject.toml -nt .venv/.installed ]; then
  echo "setup: installing screener and its development tools into .venv"
  if ! { .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e '.[dev]'; } \
      >.venv/install.log 2>&1; then
    tail -n 30 .venv/install.log >&2
    exit 1
  fi
  touch .venv/.installed
fi
echo "setup: ready (Asterisk chroot: $ROOTFS)"
