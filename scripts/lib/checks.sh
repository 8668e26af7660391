# Counted checks for the check-*.sh scripts (sourced, not run). The caller sets `work` (a
# temporary directory) and the counters `passed`, `failed` and `skipped`.
# shellcheck shell=bash disable=SC2154  # work and the counters belong to the caller

# check NAME COMMAND... : run one counted check, output indented.
check() {
  local name=$1
  shift
  echo "=== $name"
  if "$@" >"$work/out" 2>&1; then
    sed 's/^/    /' "$work/out"
    echo "PASS $name"
    passed=$((passed + 1))
  else
    sed 's/^/    /' "$work/out"
    echo "FAIL $name"
    failed=$((failed + 1))
  fi
}

# unavailable NAME WHY : a check whose tool is missing: FAIL under CI, SKIP otherwise.
unavailable() {
  if [ -n "${CI:-}" ]; then
    echo "FAIL $1 ($2; CI is set, so a missing tool is a failure)"
    failed=$((failed + 1))
  else
    echo "SKIP $1 ($2)"
    skipped=$((skipped + 1))
  fi
}

# summary : the last line, "N passed, M failed" (", K skipped" if any); fails if anything failed.
summary() {
  echo
  if [ "$skipped" -gt 0 ]; then
    echo "$passed passed, $failed failed, $skipped skipped"
  else
    echo "$passed passed, $failed failed"
  fi
  [ "$failed" -eq 0 ]
}
