#!/usr/bin/env bash
# Lints every Apigee bundle in apigee-bundles/ (shared flows and proxies) with apigeelint, Apigee X profile.
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

# Every bundle under apigee-bundles/: a shared flow's sharedflowbundle/ or a proxy's apiproxy/ folder,
# found rather than listed, so a bundle added later is linted too.
mapfile -t bundles < <(
  cd "$here" && find . -type d \( -name sharedflowbundle -o -name apiproxy \) -prune -print \
    | sed 's|^\./||' | LC_ALL=C sort
)
if (( ${#bundles[@]} == 0 )); then
  echo "lint.sh: no bundle (sharedflowbundle/ or apiproxy/) under $here" >&2
  exit 2
fi

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
