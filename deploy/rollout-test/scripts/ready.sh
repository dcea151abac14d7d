#!/bin/sh
# Readiness of an etcd member. Once the cluster has formed (this member has been healthy once,
# marked on its volume), Ready means healthy, so an OrderedReady rolling update replaces the
# next member only after this one has rejoined and quorum holds. Before that, at the very first
# bootstrap, a member reports Ready at once: under OrderedReady a health check would deadlock
# it, since member 0 is never healthy before members 1 and 2 exist.
export ETCDCTL_API=3
marker=/var/lib/etcd/.cluster-formed
if etcdctl --endpoints=http://127.0.0.1:2379 --command-timeout=2s endpoint health >/dev/null 2>&1; then
    [ -e "$marker" ] || touch "$marker"
    exit 0
fi
[ ! -e "$marker" ]
