#!/usr/bin/env bash
# Entry point for a fresh machine: makes sure the host packages and the Python environment exist
# (idempotent, quick when they do), then runs the `govmail` command with the given arguments.
#   ./govmail.sh up daknong     lab + deploy      ./govmail.sh test     all tests
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${GOVMAIL_VENV:-$here/.venv}"
# chromium + chromium-driver: the real browser of the web mail tests (Debian packages, no download).
# postgresql: the binaries of the throwaway server the account store's tests run on (tests/unit/postgres.py).
host_pkgs=(debootstrap systemd-container nftables iproute2 dnsmasq-base openssh-client openssl swaks testssl.sh python3-venv
           chromium chromium-driver postgresql)

missing=()
for p in "${host_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "govmail: installing host packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Debian's postgresql would make and start a cluster of the machine's own; the tests need none.
  mkdir -p /etc/postgresql-common/createcluster.d
  [ -e /etc/postgresql-common/createcluster.d/govmail.conf ] ||
    printf '# govmail.sh: no cluster of the machine (the tests make their own)\ncreate_main_cluster = false\n' \
      > /etc/postgresql-common/createcluster.d/govmail.conf
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

stamp="$venv/.govmail-installed"
if [ ! -x "$venv/bin/govmail" ] || [ "$here/pyproject.toml" -nt "$stamp" ]; then
  echo "govmail: preparing the Python environment in $venv" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q --upgrade pip >&2
  "$venv/bin/pip" install -q -e "$here[test]" >&2
  touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
exec "$venv/bin/govmail" "$@"
