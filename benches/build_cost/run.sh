#!/usr/bin/env bash
# Build cost of `#[projection]`: `cargo check` of 20 projections of 10 handlers each, declared
# with the macro, beside the same projections written by hand against the `Projection` trait
# (generate.py writes both crates, sharing one events module of 200 event types).
#
#   benches/build_cost/run.sh [ROUNDS]     (default 5)
#
# For each crate, after one warm-up build of the dependencies: a full check of the crate alone
# (`cargo clean -p` first) and an incremental check after touching its lib.rs, each the median
# of ROUNDS runs, sides alternating. Prints the times and the ratios (macro / by hand).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
rounds="${1:-5}"
work="${TMPDIR:-/tmp}/projections-build-cost"
rm -rf "$work/with_macro" "$work/by_hand"
mkdir -p "$work"
python3 "$here/generate.py" "$work" "$repo/projections"
cd "$work"
cp "$repo/rust-toolchain.toml" . 2>/dev/null || true
export CARGO_TARGET_DIR="$work/target"
cargo check -q -p with_macro -p by_hand 2>/dev/null

seconds() { # command... -> elapsed seconds
  local start end
  start=$(date +%s.%N); "$@" >/dev/null 2>&1; end=$(date +%s.%N)
  echo "$end - $start" | bc -l
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

declare -A full incr
for crate in with_macro by_hand; do full[$crate]=""; incr[$crate]=""; done
for round in $(seq 1 "$rounds"); do
  order=(with_macro by_hand)
  (( round % 2 == 0 )) && order=(by_hand with_macro)
  for crate in "${order[@]}"; do
    cargo clean -q -p "$crate"
    full[$crate]+="$(seconds cargo check -q -p "$crate")"$'\n'
    touch "$crate/src/lib.rs"
    incr[$crate]+="$(seconds cargo check -q -p "$crate")"$'\n'
  done
done
fm=$(printf '%s' "${full[with_macro]}" | median); fh=$(printf '%s' "${full[by_hand]}" | median)
im=$(printf '%s' "${incr[with_macro]}" | median); ih=$(printf '%s' "${incr[by_hand]}" | median)
printf 'cargo check, 20 projections x 10 handlers, median of %s rounds\n' "$rounds"
printf '  %-22s %8s %8s %8s\n' "" "macro" "by hand" "ratio"
printf '  %-22s %7.2fs %7.2fs %8.2f\n' "full check of the crate" "$fm" "$fh" "$(echo "$fm / $fh" | bc -l)"
printf '  %-22s %7.2fs %7.2fs %8.2f\n' "after touching lib.rs" "$im" "$ih" "$(echo "$im / $ih" | bc -l)"
