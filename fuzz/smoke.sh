#!/bin/sh
# fuzz/smoke.sh — a short run of every libFuzzer target, for CI.
#
#   fuzz/smoke.sh [SECONDS]        # default 30 seconds per target
#
# Builds the targets (make -C fuzz: its deps step installs clang and
# libclang-rt-14-dev when missing), then fuzzes each one for SECONDS
# (-max_total_time) with the options `make run` uses, starting from its
# seeds (corpus/<target>/), what earlier runs found (work/<target>/) and
# its saved crashes (regressions/<target>/, so a bug that is back fails at
# once). Targets run SMOKE_JOBS at a time (default: one per core). Prints
# one line per target:
#
#   fuzz_frame     ok        123456 execs  cov 261   ft 1286   30s
#   fuzz_session   CRASH         84 execs  cov 699   ft 1468    1s  regressions/fuzz_session/crash-...: <why>
#
# A crash, leak, timeout or out-of-memory is written to regressions/<target>/
# and the full log to work/<target>.smoke.log. Exits 1 if any target failed,
# 2 if the build did.
set -u
cd "$(dirname "$0")" || exit 2
secs=${1:-30}
case $secs in '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;; esac

m() { make -s --no-print-directory "$@"; }
if ! out=$(m all 2>&1); then
    printf '%s\n' "$out" >&2
    echo "fuzz smoke: build failed" >&2
    exit 2
fi
common=$(m print-OPTS_COMMON)
jobs=${SMOKE_JOBS:-$(nproc 2>/dev/null || echo 1)}

# One target: fuzz it, then write its summary line to work/<t>.smoke.line
# and its verdict (0 ok, 1 crash) to work/<t>.smoke.rc.
smoke_one() {
    t=$1
    opts=$(m "print-OPTS_$t")
    mkdir -p "work/$t" "regressions/$t"
    log="work/$t.smoke.log"
    start=$(date +%s)
    # shellcheck disable=SC2086 # the options are words
    "./$t" $opts $common -max_total_time="$secs" -artifact_prefix="regressions/$t/" \
        "work/$t" "corpus/$t" "regressions/$t" >"$log" 2>&1
    rc=$?
    took=$(($(date +%s) - start))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
    if [ "$rc" -eq 0 ]; then
        result=ok
        detail=
        echo 0 >"work/$t.smoke.rc"
    else
        result=CRASH
        art=$(sed -n 's/.*Test unit written to //p' "$log" | tail -n 1)
        why=$(grep -m 1 -E 'check failed|runtime error|ERROR: |SUMMARY: ' "$log" | cut -c 1-160)
        detail="  ${art:-(no artifact)}: ${why:-exit $rc, see $log}"
        echo 1 >"work/$t.smoke.rc"
    fi
    printf '%-14s %-5s %9s execs  cov %-5s ft %-6s %4ss%s\n' "$t" "$result" "${execs:-?}" "${cov:-?}" \
        "${ft:-?}" "$took" "$detail" >"work/$t.smoke.line"
}

# The targets run SMOKE_JOBS at a time (default: one per core).
targets=$(m print-TARGETS)
mkdir -p work
running=0
for t in $targets; do
    smoke_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait
        running=0
    fi
done
wait
status=0
for t in $targets; do
    if [ -f "work/$t.smoke.line" ]; then cat "work/$t.smoke.line"; else echo "$t: no result"; status=1; fi
    [ "$(cat "work/$t.smoke.rc" 2>/dev/null)" = 0 ] || status=1
    rm -f "work/$t.smoke.line" "work/$t.smoke.rc"
done
exit $status
