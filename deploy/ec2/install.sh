#!/usr/bin/env bash
# Installs Verdict as a systemd service on this host (deploy/README.md, "EC2").
#
#   sudo deploy/ec2/install.sh [--dry-run] [BINARY]
#   sudo deploy/ec2/install.sh --check
#
# BINARY is a built `verdict` (for example target/release/verdict, built with
# `cargo build --release --locked` on the same OS release as this host); without it the script builds
# one from this checkout. It installs the unit and, under /etc/verdict, the configuration, the example
# policies and an environment file template, these three only if absent: an operator's files are never
# overwritten. Then the new binary runs `verdict check` on the installed configuration with the
# environment file loaded; only if that passes is it installed and the service enabled. A first install
# therefore stops at the check until the environment file, the certificates and the CA are in place;
# rerun it then. Rerunning it later upgrades the binary (keeping the previous one as verdict.previous)
# and restarts a running service.
#
# --check only runs that check, for example after editing /etc/verdict. --dry-run prints what would be
# done and changes nothing. DESTDIR=/some/root installs the files under that root, for packaging, and
# skips the check and systemctl.
set -euo pipefail

usage() {
    echo "usage: sudo $0 [--dry-run] [BINARY] | --check" >&2
    exit 2
}

dry_run=0
check_only=0
binary=""
while (($#)); do
    case "$1" in
        --dry-run) dry_run=1 ;;
        --check) check_only=1 ;;
        -*) usage ;;
        *)
            [[ -z "$binary" ]] || usage
            binary="$1"
            ;;
    esac
    shift
done

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
destdir="${DESTDIR:-}"
bin="$destdir/usr/local/bin/verdict"
etc="$destdir/etc/verdict"
unit="$destdir/etc/systemd/system/verdict.service"

say() {
    printf 'install.sh: %s\n' "$*" >&2
}

# Runs a command, or only prints it with --dry-run.
run() {
    if ((dry_run)); then
        printf '+ %s\n' "$*"
    else
        "$@"
    fi
}

# Sets $binary, building it when none was given.
resolve_binary() {
    if [[ -z "$binary" ]]; then
        if ! command -v cargo >/dev/null; then
            say "no BINARY given and no cargo on PATH: build first (cargo build --release --locked) and pass target/release/verdict"
            exit 1
        fi
        run cargo build --release --locked --manifest-path "$repo/Cargo.toml" --bin verdict
        binary="$repo/target/release/verdict"
    fi
    if ((!dry_run)) && [[ ! -x "$binary" ]]; then
        say "\`$binary\` is not an executable"
        exit 1
    fi
}

install_binary() {
    # Replaced by a rename, so a running service keeps its old file until it restarts.
    run install -d -m 0755 "$(dirname "$bin")"
    if [[ -e "$bin" ]]; then
        run cp -p "$bin" "$bin.previous"
    fi
    run install -m 0755 "$binary" "$bin.new"
    run mv -f "$bin.new" "$bin"
}

# /etc/verdict is world-readable, since the service's dynamic user reads it, except the environment
# file (read by systemd as root) and the TLS key (handed over as a systemd credential).
install_configuration() {
    run install -d -m 0755 "$etc"
    if [[ -e "$etc/verdict.yaml" ]]; then
        say "keeping $etc/verdict.yaml; the shipped one is $etc/verdict.yaml.dist"
        run install -m 0644 "$repo/deploy/ec2/verdict.yaml" "$etc/verdict.yaml.dist"
    else
        run install -m 0644 "$repo/deploy/ec2/verdict.yaml" "$etc/verdict.yaml"
    fi
    if [[ -e "$etc/policies" ]]; then
        say "keeping $etc/policies"
    else
        run cp -R "$repo/examples/policies" "$etc/policies"
        run chmod -R u=rwX,go=rX "$etc/policies"
    fi
    if [[ -e "$etc/verdict.env" ]]; then
        say "keeping $etc/verdict.env"
    elif ((dry_run)); then
        printf '+ write %s (mode 0600)\n' "$etc/verdict.env"
    else
        (
            umask 077
            cat >"$etc/verdict.env" <<'ENV'
# Verdict's environment (systemd EnvironmentFile syntax: NAME=value, no shell expansion). Mode 0600.
# The key Apigee's shared flow sends (its KVM `verdict`, entry `caller_key`); at least 16 characters,
# e.g. from `openssl rand -base64 32`.
VERDICT_CALLER_KEY=
# The OpenID Connect issuer of the clients' access tokens (their exact `iss`) and the audience they carry.
VERDICT_ISSUER=
VERDICT_API_AUDIENCE=
# Only if verdict.yaml configures an introspecting issuer:
#INTROSPECT_SECRET=
ENV
        )
    fi
    run install -d -m 0755 "$(dirname "$unit")"
    run install -m 0644 "$repo/deploy/ec2/verdict.service" "$unit"
}

# `verdict check` by the binary $1 with the environment the service gets: the environment file's
# variables (read, not sourced, so a `$` in a secret stays literal) and a credentials directory holding
# the files the unit's LoadCredential= lines name.
check_configuration() {
    local verdict="$1"
    local environment=("PATH=/usr/bin:/bin" "CREDENTIALS_DIRECTORY=$etc")
    local line name value
    if [[ -r "$etc/verdict.env" ]]; then
        while IFS= read -r line || [[ -n "$line" ]]; do
            [[ "$line" =~ ^[[:space:]]*(#|$) ]] && continue
            name="${line%%=*}"
            value="${line#*=}"
            if [[ "$value" =~ ^\"(.*)\"$ || "$value" =~ ^\'(.*)\'$ ]]; then
                value="${BASH_REMATCH[1]}"
            fi
            environment+=("$name=$value")
        done <"$etc/verdict.env"
    fi
    if ((dry_run)); then
        printf '+ env -i <%s> %s check --config %s\n' "$etc/verdict.env" "$verdict" "$etc/verdict.yaml"
    elif ! env -i "${environment[@]}" "$verdict" check --config "$etc/verdict.yaml"; then
        say "the configuration does not check out: fill in $etc/verdict.env, put tls.crt, tls.key and apigee-ca.pem in $etc, then rerun this script"
        exit 1
    fi
}

start_service() {
    local was_active=0
    if systemctl is-active --quiet verdict; then
        was_active=1
    fi
    run systemctl daemon-reload
    run systemctl enable --now verdict
    if ((was_active)); then
        # `enable --now` leaves a running service alone; the new binary needs a restart.
        run systemctl restart verdict
    fi
}

if ((!dry_run)) && [[ -z "$destdir" ]] && ((EUID != 0)); then
    say "run as root (sudo), or with --dry-run or DESTDIR"
    exit 1
fi
if ((check_only)); then
    check_configuration "$bin"
    exit 0
fi
resolve_binary
install_configuration
if [[ -n "$destdir" ]]; then
    install_binary
    say "installed under $destdir; not checking or starting anything"
    exit 0
fi
# The new binary checks the configuration before it replaces the running one.
check_configuration "$binary"
install_binary
start_service
say "done: systemctl status verdict; journalctl -u verdict"
