#!/bin/sh
# Data generator (a sidecar of each member): the rig's write pattern through the etcd v3 API,
# every value from a file on stdin, never on a command line. Per cycle: 10 new bulk keys of
# 1 KiB random data, 50 fixed keys overwritten, 3 new large keys of 10 KiB; keys older than
# KEEP_CYCLES cycles are deleted so the database stays bounded.
set -u
export ETCDCTL_API=3
export ETCDCTL_ENDPOINTS="${ETCDCTL_ENDPOINTS:-http://127.0.0.1:2379}"
KEEP_CYCLES=${KEEP_CYCLES:-600}
# shellcheck disable=SC3028 # the container runtime sets HOSTNAME (the pod name)
host=${HOSTNAME:-$(hostname)}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
until etcdctl endpoint health >/dev/null 2>&1; do sleep 2; done
echo "generator on $host: etcd is healthy, writing"
put() { etcdctl put "$1" <"$2" >/dev/null || echo "put $1 failed"; }
counter=1
while true; do
    for i in $(seq 1 10); do
        head -c 1024 /dev/urandom | base64 -w0 >"$tmp/v"
        put "bulk-data-$host-$counter-$i" "$tmp/v"
    done
    for i in $(seq 1 50); do
        printf 'timestamp-%s-counter-%s' "$(date +%s.%N)" "$counter" >"$tmp/v"
        put "frequent-$host-$i" "$tmp/v"
    done
    for i in $(seq 1 3); do
        head -c 10240 /dev/urandom | base64 -w0 >"$tmp/v"
        put "large-data-$host-$counter-$i" "$tmp/v"
    done
    old=$((counter - KEEP_CYCLES))
    if [ "$old" -gt 0 ]; then
        etcdctl del --prefix "bulk-data-$host-$old-" >/dev/null
        etcdctl del --prefix "large-data-$host-$old-" >/dev/null
    fi
    if [ $((counter % 100)) -eq 0 ]; then
        echo "generated $counter cycles on $host; volume: $(du -sh /var/lib/etcd 2>/dev/null | cut -f1)"
    fi
    counter=$((counter + 1))
    sleep 1
done
