#!/bin/sh
# How Patroni makes this db host's standby (govmail/services/db.py: create_replica_methods). Patroni
# runs it as postgres with --scope=<version>-<cluster> --datadir=<dir> --connstring=<the primary>.
# The cluster keeps Debian's layout (pg_createcluster makes /etc/postgresql/<version>/<cluster>,
# never started by Debian: start.conf manual), then its data is a base backup of the primary, taken
# at once (--checkpoint=fast) rather than at the primary's next checkpoint, minutes away when quiet.
set -eu
scope= datadir= conn=
for arg in "$@"; do
  case $arg in
    --scope=*) scope=${arg#*=} ;;
    --datadir=*) datadir=${arg#*=} ;;
    --connstring=*) conn=${arg#*=} ;;
  esac
done
[ -n "$scope" ] && [ -n "$datadir" ] && [ -n "$conn" ] || { echo "pg-clone: --scope, --datadir and --connstring are needed" >&2; exit 2; }
version=${scope%%-*}
cluster=${scope#*-}
conf=/etc/postgresql/$version/$cluster
# What an earlier attempt or Debian left: this host's copy is made anew from the primary.
if [ -f "$conf/postgresql.conf" ]; then
  pg_dropcluster "$version" "$cluster"
fi
rm -f "$conf/postgresql.base.conf"
pg_createcluster --start-conf=manual --datadir="$datadir" "$version" "$cluster" >/dev/null
rm -rf "$datadir"
exec "/usr/lib/postgresql/$version/bin/pg_basebackup" --pgdata "$datadir" -X stream --checkpoint=fast --dbname="$conn"
