#!/usr/bin/env bash
# Runs `duplicates` over the non-test code of the checkout in $1 (default: this repository): the
# files git tracks minus tests/, benches/, examples/, fuzz/, workspace-bins/ and the trailing
# #[cfg(test)] module of each .rs file, copied to a temporary directory. Prints the pair count and
# the pairs (docs/architecture.md, "Duplicate code", has the counts of issue #19).
# Needs the `duplicates` command on PATH.
set -euo pipefail
repo=${1:-"$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cd "$repo"
git ls-files | grep -v -E '(^|/)tests/|(^|/)benches/|(^|/)examples/|^fuzz/|^workspace-bins/' | while read -r f; do
  mkdir -p "$out/$(dirname "$f")"
  case "$f" in
    # The unit tests sit at the end of a source file, from its top-level #[cfg(test)] on.
    *.rs) awk '/^#\[cfg\(test\)\]/{skip=1} !skip' "$f" > "$out/$f" ;;
    *) cp "$f" "$out/$f" ;;
  esac
done
duplicates --repo "$out" --most 200 --seconds 120
