#!/usr/bin/env bash
# The test command: set up whatever is missing, build, and run every tap test.
# Ends with a plain "N passed, N failed, N skipped" line.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh || { echo "tests: setup failed"; exit 2; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT
npx tap "$@" 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
# tap's last line looks like: # { total: 36, pass: 33, fail: 1, skip: 2 }
summary=$(grep -E '^# \{ total: ' "$out" | tail -n 1)
num() { echo "$summary" | grep -oE "$1: [0-9]+" | grep -oE '[0-9]+' || echo 0; }
pass=$(num pass); fail=$(num fail); skip=$(num skip); todo=$(num todo)
echo "tests: ${pass} passed, ${fail} failed, $((skip + todo)) skipped"
exit "$rc"
