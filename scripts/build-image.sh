#!/usr/bin/env bash
# Builds s3mover's container image FROM scratch with buildah — no Docker engine, no registry, no
# network — and writes it as an OCI archive.
#
#   scripts/build-image.sh [OUT.tar]          # default: target/s3mover-image.tar
#
# The image holds the s3mover binary (stripped) at /usr/local/bin/s3mover, exactly the shared
# libraries `ldd` says it loads (at the paths the loader looks for them), a CA bundle at
# /etc/ssl/certs/ca-certificates.crt (the system roots s3mover trusts for S3 over TLS), an
# /etc/passwd with root and `nonroot` (65532), and a world-writable /tmp. Entrypoint: s3mover.
# It runs as 65532 by default; the mover pods `s3mover k8s` starts ask for root themselves
# (they open raw block devices).
#
# Settings (environment):
#   S3MOVER_BIN        the binary to package (default target/release/s3mover; when it is
#                      missing the script runs `cargo build --release -p s3mover` first)
#   S3MOVER_CA_BUNDLE  the CA bundle to ship (default /etc/ssl/certs/ca-certificates.crt)
#   S3MOVER_IMAGE_REF  the name the archive records (default s3mover:latest)
#
# Load the result with `skopeo copy oci-archive:OUT.tar docker://REGISTRY/s3mover:TAG`,
# `podman load -i OUT.tar`, or unpack it with `umoci unpack`. It prints the archive's size
# and the compressed size of its layers.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/target/s3mover-image.tar}"
bin="${S3MOVER_BIN:-$root/target/release/s3mover}"
ca="${S3MOVER_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
ref="${S3MOVER_IMAGE_REF:-s3mover:latest}"

die() {
    echo "build-image.sh: $*" >&2
    exit 1
}

for tool in buildah ldd; do
    command -v "$tool" >/dev/null 2>&1 || die "needs $tool (Debian: apt-get install buildah libc-bin)"
done
if [[ ! -x "$bin" ]]; then
    if [[ -n "${S3MOVER_BIN:-}" ]]; then
        die "S3MOVER_BIN=$bin is not an executable file"
    fi
    echo "build-image.sh: $bin is missing; cargo build --release -p s3mover" >&2
    (cd "$root" && cargo build --release -p s3mover)
fi
[[ -f "$ca" ]] || die "no CA bundle at $ca (Debian: apt-get install ca-certificates, or set S3MOVER_CA_BUNDLE)"
case "$out" in
    /*) ;;
    *) out="$PWD/$out" ;;
esac
mkdir -p "$(dirname "$out")"

work="$(mktemp -d "${TMPDIR:-/tmp}/s3mover-image.XXXXXX")"
cleanup() {
    # buildah's vfs storage under $work holds read-only layer copies; its own rm unmounts them.
    buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs rm --all \
        >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

rootfs="$work/context/rootfs"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/ssl/certs" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"

# The binary, without its debug information (the release profile keeps line tables).
cp "$bin" "$rootfs/usr/local/bin/s3mover"
if command -v strip >/dev/null 2>&1; then
    strip --strip-debug "$rootfs/usr/local/bin/s3mover"
fi
chmod 0755 "$rootfs/usr/local/bin/s3mover"

# Exactly the shared objects the binary loads, the dynamic loader included, each at the path
# ldd resolved it to (the loader at the path the ELF header names).
libs="$(ldd "$bin" 2>&1)" || die "ldd $bin failed: $libs"
if grep -q "not found" <<<"$libs"; then
    die "$bin needs libraries this machine lacks: $(grep 'not found' <<<"$libs" | tr -s ' \t\n' ' ')"
fi
while read -r path; do
    [[ -n "$path" ]] || continue
    mkdir -p "$rootfs$(dirname "$path")"
    cp -L "$path" "$rootfs$path"
done < <(grep -o '/[^ ]*' <<<"$libs" | sort -u)

cp -L "$ca" "$rootfs/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/tmp:/sbin/nologin\n' \
    >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"

version="$("$rootfs/usr/local/bin/s3mover" --version 2>/dev/null | awk '{print $2}' | tr -cd '0-9A-Za-z.+-')" ||
    version=unknown
cat >"$work/context/Containerfile" <<EOF
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
LABEL org.opencontainers.image.title="s3mover" \\
      org.opencontainers.image.description="Back up block volumes to object storage" \\
      org.opencontainers.image.version="${version:-unknown}"
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["/usr/local/bin/s3mover"]
EOF

b=(buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs)
"${b[@]}" bud --isolation chroot --quiet --layers=false -t "localhost/$ref" \
    -f "$work/context/Containerfile" "$work/context" >/dev/null
rm -f "$out"
"${b[@]}" push --quiet "localhost/$ref" "oci-archive:$out:$ref"

# The compressed size is what a registry stores and a node pulls: the layer blobs.
layers="$(tar -tvf "$out" | awk '$6 ~ /^blobs\/sha256\// {print $3}' | sort -n | tail -1)"
echo "build-image.sh: wrote $out ($(stat -c %s "$out") bytes; largest blob, the layer: ${layers:-?} bytes compressed)"
