#!/bin/sh
# Boots Petrel's hello unikernel through petreld and shows its console.
# Uses petreld's embedded defaults (data in /var/lib/petrel, socket in
# /run/petrel); a petreld already running there is reused, otherwise one
# is started for the demo and stopped afterwards. Run as root (petreld
# manages VMs on /dev/kvm).
set -eu
cd "$(dirname "$0")/../.."
BIN="$PWD/bin"
SOCK=/run/petrel/petreld.sock
PETREL="$BIN/petrel --socket $SOCK"

if [ "$(id -u)" -ne 0 ]; then
	echo "demo: run as root (petreld needs /dev/kvm and /run/petrel)" >&2
	exit 1
fi
if [ ! -c /dev/kvm ]; then
	echo "demo: /dev/kvm is missing; the hvt backend needs KVM" >&2
	exit 1
fi

started=""
if ! $PETREL version >/dev/null 2>&1; then
	log=$(mktemp /tmp/petreld-demo.XXXXXX.log)
	echo "== starting petreld (log: $log)"
	"$BIN/petreld" >"$log" 2>&1 &
	started=$!
	trap 'kill $started 2>/dev/null; wait $started 2>/dev/null || true' EXIT
	i=0
	until $PETREL version >/dev/null 2>&1; do
		i=$((i + 1))
		if [ $i -gt 100 ] || ! kill -0 "$started" 2>/dev/null; then
			echo "demo: petreld did not start:" >&2
			cat "$log" >&2
			exit 1
		fi
		sleep 0.1
	done
fi

$PETREL version
echo "== plugins"
$PETREL plugins
echo "== petrel create hello bin/guests/hello.hvt --arg=world"
$PETREL create hello "$BIN/guests/hello.hvt" --mem 32 --arg=world --force
echo "== petrel console hello --follow"
$PETREL console hello --follow
echo "== petrel info hello"
$PETREL info hello
$PETREL destroy hello
