#!/usr/bin/env bash
# Lints every Apigee bundle in apigee-bundles/ with apigeelint, Apigee X profile.
# Exits non-zero if any bundle has an error or a warning.
# apigeelint is pinned in the repository's package.json: run `npm ci` first.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
apigeelint="$repo/node_modules/.bin/apigeelint"

if [[ ! -x "$apigeelint" ]]; then
  echo "lint.sh: $apigeelint not found; run \`npm ci\` in $repo first" >&2
  exit 2
fi

bundles=(
  sharedflows/verdict-authorize/sharedflowbundle
  proxies/verdict-sample/apiproxy
)

failed=()
for bundle in "${bundles[@]}"; do
  echo "== apigeelint --profile apigeex: apigee-bundles/$bundle"
  # --norc: ignore any .apigeelintrc, so every machine lints with the same settings.
  # --maxWarnings 0: a warning fails the run; an error always does.
  if ! "$apigeelint" --norc --profile apigeex --maxWarnings 0 -f table.js -s "$here/$bundle"; then
    failed+=("$bundle")
  fi
done

if (( ${#failed[@]} > 0 )); then
  echo "lint.sh: errors or warnings in: ${failed[*]}" >&2
  exit 1
fi
echo "lint.sh: ${#bundles[@]} bundles, 0 errors, 0 warnings"
