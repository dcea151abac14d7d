#!/usr/bin/env bash
# s3mover installed (deploy/, kubectl apply -k) with its repository, and the demo's namespace
# ready for backups: the repository Secret and the mover service account
# (deploy/rbac/mover.yaml).
#
# The repository is the in-cluster Garage of deploy/overlays/garage-demo (keys and password made
# here once and kept in the cluster's Secrets), or, when S3MOVER_REPO is set, that repository
# (with S3MOVER_PASSWORD and the AWS_* settings the pods need; on minikube with
# deploy/overlays/external-s3).
# shellcheck source-path=SCRIPTDIR source=00-env.sh
source "$(dirname "$0")/00-env.sh"

# secret NAME NAMESPACE KEY=VALUE...: creates or updates a Secret.
secret() {
    local name="$1" ns="$2" args=()
    shift 2
    for kv in "$@"; do args+=("--from-literal=$kv"); done
    k create secret generic "$name" -n "$ns" "${args[@]}" --dry-run=client -o yaml | apply
}
# A Secret's key, decoded; empty when the Secret or the key is missing.
secret_key() {
    k get secret "$1" -n "$2" -o "jsonpath={.data.$3}" 2>/dev/null | base64 -d
}
random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

# s3mover-system is installed from an overlay on the demo's own minikube, and wherever Garage
# is to run in it; an existing cluster's installation is otherwise left as it is (the demo runs
# s3mover from this machine and needs only the demo namespace).
namespaces=("$DEMO_NS")
if garage_repo; then
    overlay=garage-demo
elif [[ "$S3MOVER_DEMO_CLUSTER" == minikube ]]; then
    overlay=external-s3
else
    overlay=""
fi
if ! garage_repo; then
    : "${S3MOVER_PASSWORD:?S3MOVER_REPO is set: set S3MOVER_PASSWORD too}"
fi
if [[ -n "$overlay" ]]; then
    say "s3mover (deploy/overlays/$overlay)"
    k apply -k "$ROOT/deploy/overlays/$overlay"
    namespaces+=("$SYSTEM_NS")
else
    say "s3mover-system: left as it is on an existing cluster"
fi

say "namespace $DEMO_NS with the mover identity"
k create namespace "$DEMO_NS" --dry-run=client -o yaml | apply
sed "s/namespace: default/namespace: $DEMO_NS/" "$ROOT/deploy/rbac/mover.yaml" | apply

if garage_repo; then
    say "Garage in $SYSTEM_NS"
    key="$(secret_key garage-demo "$SYSTEM_NS" GARAGE_DEFAULT_ACCESS_KEY)"
    if [[ -z "$key" ]]; then
        key="GK$(random_hex 12)"
        secret garage-demo "$SYSTEM_NS" "GARAGE_RPC_SECRET=$(random_hex 32)" \
            "GARAGE_DEFAULT_ACCESS_KEY=$key" "GARAGE_DEFAULT_SECRET_KEY=$(random_hex 32)" \
            GARAGE_DEFAULT_BUCKET=s3mover
    else
        echo "Secret garage-demo is there: keeping its keys"
    fi
    password="$(secret_key s3mover-repo "$SYSTEM_NS" S3MOVER_PASSWORD)"
    [[ -n "$password" ]] || password="$(random_hex 16)"
    settings=(S3MOVER_REPO=s3://s3mover/demo "S3MOVER_PASSWORD=$password"
        "AWS_ACCESS_KEY_ID=$key"
        "AWS_SECRET_ACCESS_KEY=$(secret_key garage-demo "$SYSTEM_NS" GARAGE_DEFAULT_SECRET_KEY)"
        AWS_REGION=garage "AWS_ENDPOINT_URL=http://garage-demo.$SYSTEM_NS.svc:3900")
    k rollout status -n "$SYSTEM_NS" deployment/garage-demo --timeout=5m
else
    settings=("S3MOVER_REPO=$S3MOVER_REPO" "S3MOVER_PASSWORD=$S3MOVER_PASSWORD")
    for var in AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION AWS_ENDPOINT_URL; do
        [[ -z "${!var:-}" ]] || settings+=("$var=${!var}")
    done
fi

say "the repository Secret s3mover-repo in ${namespaces[*]}"
for ns in "${namespaces[@]}"; do
    secret s3mover-repo "$ns" "${settings[@]}"
done

say "the repository"
[[ -x "$S3MOVER" ]] || die "no s3mover at $S3MOVER: cargo build --release -p s3mover, or set S3MOVER"
if with_repo "$S3MOVER" backups >/dev/null 2>&1; then
    echo "already initialized"
else
    # S3MOVER_INIT_ARGS: more `s3mover init` flags (e.g. --kdf-memory 64M).
    read -ra init_args <<<"${S3MOVER_INIT_ARGS:-}"
    with_repo "$S3MOVER" init "${init_args[@]}"
fi
