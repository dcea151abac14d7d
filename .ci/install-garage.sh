#!/usr/bin/env bash
# Installs Garage (the S3 server the integration tests start) from crates.io when it is missing.
# Idempotent: does nothing if `garage` is on PATH, in ~/.cargo/bin, or at $GARAGE_BIN.
set -euo pipefail

if [[ -n "${GARAGE_BIN:-}" && -x "${GARAGE_BIN}" ]]; then
    echo "garage: using ${GARAGE_BIN}"
    exit 0
fi
if command -v garage >/dev/null 2>&1; then
    echo "garage: using $(command -v garage)"
    exit 0
fi
if [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/garage" ]]; then
    echo "garage: using ${CARGO_HOME:-$HOME/.cargo}/bin/garage"
    exit 0
fi

echo "garage: not found; running cargo install garage --locked (about 10 minutes on 2 cores)"
cargo install garage --locked
echo "garage: installed $("${CARGO_HOME:-$HOME/.cargo}/bin/garage" --version 2>/dev/null || echo '?')"
