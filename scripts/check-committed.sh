#!/usr/bin/env bash
# Lint + typecheck + unit tests of exactly what is committed (a clean worktree of HEAD), so work in progress
# in the main tree cannot hide a broken commit. Usage: bash scripts/check-committed.sh [vitest filters…]
set -euo pipefail
top=$(git rev-parse --show-toplevel)
wt=$(mktemp -d /tmp/amb-check-XXXX)
trap 'git -C "$top" worktree remove --force "$wt" >/dev/null 2>&1 || rm -rf "$wt"' EXIT
git -C "$top" worktree add --detach "$wt" HEAD >/dev/null
ln -s "$top/node_modules" "$wt/node_modules"
cd "$wt"
npx biome check . && npx tsc -p tsconfig.json && echo "lint+typecheck OK"
if [ "$#" -gt 0 ]; then npx vitest run --project unit "$@"; fi
