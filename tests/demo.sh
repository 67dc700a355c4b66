#!/usr/bin/env bash
# The main job end to end on the embedded sample data: build, start a daemon on a
# temporary socket and state directory, submit the sample jobs, stop and start one
# of them mid-run, and print the results. Everything is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet --bins
bin=target/debug
tmp=$(mktemp -d)
export JOBD_SOCKET="$tmp/jobd.sock"
"$bin/jobd" --state-dir "$tmp/state" 2>"$tmp/jobd.log" &
daemon=$!
trap 'kill -TERM $daemon 2>/dev/null; wait $daemon 2>/dev/null; rm -rf "$tmp"' EXIT

jobctl() { "$bin/jobctl" "$@"; }
for _ in $(seq 100); do jobctl ping >/dev/null 2>&1 && break; sleep 0.05; done
jobctl ping

echo "== upload the sample baseline at 20 rows/s, then stop and start it"
id=$(jobctl -q upload --rate 20 tests/data/baseline.csv)
sleep 1
jobctl stop "$id"
jobctl status "$id"
jobctl start "$id"
jobctl wait "$id"

echo "== create teams in bulk (one row repeats a team name: a row error)"
teams=$(jobctl -q bulk-team tests/data/teams.csv)
jobctl wait "$teams"
jobctl errors "$teams"

echo "== export 2020-01-01 .. 2020-01-03"
export_id=$(jobctl -q export --from 2020-01-01 --to 2020-01-03 --wait)
jobctl output "$export_id"

echo "== all jobs"
jobctl status
