#!/bin/sh
# Load client: heavy writes spread over the members through the etcd v3 API. Values are files
# fed on stdin (never argv, whose single-argument limit is 128 KiB) and stay under etcd's
# request limit (--max-request-bytes, 1.5 MiB by default): a 512 KiB random value is about
# 683 KiB in base64. Keys older than KEEP_CYCLES cycles are deleted.
set -u
export ETCDCTL_API=3
: "${MEMBERS:?MEMBERS must list the member endpoints, comma-separated}"
KEEP_CYCLES=${KEEP_CYCLES:-20}
VALUE_KIB=${VALUE_KIB:-512}
# shellcheck disable=SC3028 # the container runtime sets HOSTNAME (the pod name)
host=${HOSTNAME:-$(hostname)}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
until etcdctl --endpoints="$MEMBERS" endpoint health >/dev/null 2>&1; do sleep 2; done
echo "load client $host: all members healthy, writing"
member() { echo "$MEMBERS" | cut -d, -f$(($1 % 3 + 1)); }
put() { etcdctl --endpoints="$1" put "$2" <"$3" >/dev/null || echo "put $2 via $1 failed"; }
counter=1
while true; do
    for i in $(seq 1 5); do
        head -c $((VALUE_KIB * 1024)) /dev/urandom | base64 -w0 >"$tmp/v"
        put "$(member "$counter")" "massive-data-$host-$counter-$i" "$tmp/v"
    done
    for i in $(seq 1 50); do
        { printf '%s-%s-' "$(date +%s.%N)" "$counter"; head -c 10240 /dev/urandom | base64 -w0; } >"$tmp/v"
        put "$(member "$i")" "frequent-$host-$i" "$tmp/v"
    done
    for d in $(seq 1 5); do
        for f in $(seq 1 10); do
            { date +%s.%N; head -c 51200 /dev/urandom | base64 -w0; } >"$tmp/v"
            put "$(member "$d")" "stress-test/dir-$d/file-$f-$host-$counter" "$tmp/v"
        done
    done
    old=$((counter - KEEP_CYCLES))
    if [ "$old" -gt 0 ]; then
        etcdctl --endpoints="$MEMBERS" del --prefix "massive-data-$host-$old-" >/dev/null
        for d in $(seq 1 5); do
            for f in $(seq 1 10); do
                etcdctl --endpoints="$MEMBERS" del "stress-test/dir-$d/file-$f-$host-$old" >/dev/null
            done
        done
    fi
    if [ $((counter % 25)) -eq 0 ]; then
        echo "cycle $counter on $host"
        etcdctl --endpoints="$MEMBERS" member list
    fi
    counter=$((counter + 1))
    sleep 1
done
