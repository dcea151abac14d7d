#!/bin/sh
# preStop of an etcd member: hand leadership to another started member if this one leads, then
# give clients and endpoints a moment to stop sending here. It never signals etcd (PID 1): the
# kubelet sends SIGTERM when this hook returns, and etcd shuts down cleanly and syncs on it.
# Killing PID 1 from a hook stops the container under the hook, which the kubelet then kills
# (FailedPreStopHook, exit 137).
set -u
export ETCDCTL_API=3
local_ep=http://127.0.0.1:2379
# shellcheck disable=SC3028 # the container runtime sets HOSTNAME (the pod name)
echo "$(date -u +%FT%TZ) preStop: ${HOSTNAME:-$(hostname)}"
# endpoint status: ENDPOINT, ID, VERSION, DB SIZE, IS LEADER, ...
status=$(etcdctl --endpoints="$local_ep" --command-timeout=5s endpoint status 2>/dev/null | tr -d ',')
if [ -n "$status" ]; then
    # shellcheck disable=SC2086 # split into its fields on purpose
    set -- $status
    me=$2
    leader=$5
    if [ "$leader" = "true" ]; then
        target=$(etcdctl --endpoints="$local_ep" --command-timeout=5s member list 2>/dev/null |
            tr -d ',' | while read -r id state _; do
                if [ "$state" = "started" ] && [ "$id" != "$me" ]; then echo "$id"; fi
            done | head -n 1)
        if [ -n "$target" ]; then
            etcdctl --endpoints="$local_ep" --command-timeout=10s move-leader "$target" ||
                echo "preStop: moving leadership to $target failed; etcd elects a new leader after SIGTERM"
        fi
    fi
fi
sleep 5
echo "$(date -u +%FT%TZ) preStop: done, SIGTERM follows"
exit 0
