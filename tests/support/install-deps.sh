#!/usr/bin/env bash
# Installs what `make test` needs and is missing, from the lists in tests/support/deps/.
# Idempotent: a second run checks and installs nothing. Go builds and npm packages go to
# the cache ($PONTOON_CACHE, default ~/.cache/pontoon), never into the work tree.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
CACHE=${PONTOON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pontoon}
mkdir -p "$CACHE"

apt_missing=() pip_missing=() npm_missing=() go_builds=() rustup_missing=()
while read -r kind name; do
  case "$kind" in
    ''|'#'*) continue ;;
    apt) dpkg-query -W -f='${Status}' "$name" 2>/dev/null | grep -q 'install ok installed' || apt_missing+=("$name") ;;
    pip) pip show -q "${name%%==*}" >/dev/null 2>&1 || pip_missing+=("$name") ;;
    npm) [ -d "$CACHE/npm/node_modules/${name%@*}" ] || npm_missing+=("$name") ;;
    go-build) go_builds+=("$name") ;;
    rustup) rustup component list --installed 2>/dev/null | grep -q "^$name" || rustup_missing+=("$name") ;;
    *) echo "install-deps: unknown kind '$kind' in tests/support/deps" >&2; exit 1 ;;
  esac
done < <(cat "$here"/deps/*.txt | sed 's/#.*//' | sort -u)

if [ ${#apt_missing[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${apt_missing[*]}" >&2
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
fi
if [ ${#rustup_missing[@]} -gt 0 ]; then
  rustup component add "${rustup_missing[@]}"
fi
if [ ${#pip_missing[@]} -gt 0 ]; then
  echo "install-deps: pip install ${pip_missing[*]}" >&2
  pip install -q --root-user-action=ignore "${pip_missing[@]}"
fi
if [ ${#npm_missing[@]} -gt 0 ]; then
  echo "install-deps: npm install ${npm_missing[*]}" >&2
  npm install --silent --no-audit --no-fund --prefix "$CACHE/npm" "${npm_missing[@]}"
fi
for target in "${go_builds[@]}"; do
  "$here/go-build.sh" "$target"
done
