#!/usr/bin/env bash
# The long fuzz campaign: every target (or those named) for SECONDS each (default 1800), one
# at a time on one core, starting from the corpus kept in fuzz/corpus/<target> and the
# real-client seeds in fuzz/seeds/<target>; then the corpus is minimised (cargo fuzz cmin) and
# a line per target goes to fuzz/campaign.log: runs, coverage, features, corpus size, crashes.
# A crash stops that target; its input is under fuzz/artifacts/<target>/.
#
#   fuzz/campaign.sh                    # all targets, 30 min each
#   SECONDS_PER_TARGET=600 fuzz/campaign.sh config_parse api_body
#   CORE=1 fuzz/campaign.sh             # pinned to that core (taskset)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${SECONDS_PER_TARGET:-1800}
targets=("$@")
((${#targets[@]})) || mapfile -t targets < <(cargo fuzz list)
pin=()
[[ -n "${CORE:-}" ]] && pin=(taskset -c "$CORE")
export RUSTC_BOOTSTRAP=1
RUSTC_BOOTSTRAP=1 cargo fuzz build
for target in "${targets[@]}"; do
  corpus=fuzz/corpus/$target
  mkdir -p "$corpus"
  seeds=()
  [[ -d fuzz/seeds/$target ]] && seeds=(fuzz/seeds/"$target")
  log=fuzz/target/campaign-$target.log
  mkdir -p fuzz/target
  before=$(find "$corpus" -type f | wc -l)
  started=$(date -u +%FT%TZ)
  status=ok
  if ! "${pin[@]}" cargo fuzz run "$target" "$corpus" "${seeds[@]}" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    status="CRASH (see $log and fuzz/artifacts/$target/)"
  fi
  done_line=$(grep -E '^Done [0-9]+ runs' "$log" | tail -n1 || true)
  stats=$(grep -E '^#[0-9]+.*(DONE|cov:)' "$log" | tail -n1 || true)
  cargo fuzz cmin "$target" "$corpus" >"$log.cmin" 2>&1 || echo "cmin of $target failed: see $log.cmin" >&2
  after=$(find "$corpus" -type f | wc -l)
  bytes=$(du -sb "$corpus" | cut -f1)
  echo "$started $target ${seconds}s: $status; $done_line; last: $stats; corpus $before -> $after files ($bytes bytes) after cmin" | tee -a fuzz/campaign.log
done
