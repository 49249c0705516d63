#!/bin/sh
# Runs Petrel's benchmarks and prints one table: benchmark, figure, value.
# Figures with a baseline measured in the same run (the bare tender, a
# plain copy or an fsynced file copy, the local socket, plain TCP) come with their ratio. The raw
# `go test -bench` output is kept in bin/bench.txt.
set -eu
cd "$(dirname "$0")/../.."
export PETREL_BIN="$PWD/bin" PETREL_GUESTS="$PWD/bin/guests"
out=bin/bench.txt
: > "$out"
run() { go test -run '^$' "$@" 2>&1 | tee -a "$out" | grep -E '^(Benchmark|FAIL|---)' >&2 || true; }
run -bench '^Benchmark(Deploy|DaemonRPC|PluginRPC|RemoteCreate)$' -benchtime 200x -timeout 30m ./core/integration/
run -bench 'Density|BlockUpload|StatsCost|ConsoleThroughput' -benchtime 1x -timeout 30m ./core/integration/
run -bench '^Benchmark(Transfer|TransferGzip|TLSLoopback)$' -benchtime 3x -timeout 30m ./core/integration/
run -bench 'SHA256|GzipChunks' ./sdk/transfer/
run -bench '^BenchmarkRelay$' -benchtime 4x ./core/endpoint/
run -bench 'RestartReattach' -benchtime 3x -timeout 30m ./core/integration/
run -bench 'RegistryPull' -benchtime 10x -timeout 10m ./core/integration/
run -bench 'QEMUDeploy' -benchtime 5x -timeout 20m ./core/integration/
run -bench '^Benchmark(BuiltinTenders|TenderMemory|DeploySPT)$' -benchtime 50x -timeout 20m ./core/integration/
run -bench '^Benchmark(CLIDeploy|CLIStart|FollowExitLatency)$' -benchtime 50x -timeout 20m ./core/integration/
run -bench 'Hello' ./plugins/hvt/tender/
run -bench 'Handshake|LoopbackTCP' ./core/pki/
run -bench 'Launch|ReadStats' ./sdk/shim/
run -bench 'CreateToMarker' -timeout 20m ./plugins/qemu/backend/
if grep -q '^FAIL' "$out"; then
	echo "bench: a benchmark failed; see $out" >&2
	exit 1
fi
echo
printf '%-40s %-28s %s\n' BENCHMARK FIGURE VALUE
# go test prints a benchmark's name before running it and its figures
# after, so a log line written meanwhile can come between the two: join
# them again before printing.
awk '/^Benchmark/ { name = $1; if ($0 ~ / ns\/op/) print; next }
/^[ \t]+[0-9]+[ \t]+[0-9.e+]+ ns\/op/ && name != "" { print name $0; name = "" }' "$out" |
awk '/^Benchmark/ {
	name = $1; sub(/-[0-9]+$/, "", name)
	printf "%-40s %-28s %s\n", name, "ns/op", $3
	for (i = 5; i < NF; i += 2) printf "%-40s %-28s %s\n", "", $(i+1), $i
}'
