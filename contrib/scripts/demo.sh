#!/bin/sh
# Petrel's demo: checks the host, installs only what the demo needs (gcc,
# its C headers and make, for Petrel's test unikernels), builds Petrel,
# starts petreld with its embedded defaults (data in /var/lib/petrel,
# socket in /run/petrel), boots the hello unikernel and shows its console.
#
# hello runs on hvt (KVM) where /dev/kvm is usable and on spt (Solo5's
# sandboxed-process target, no KVM needed) elsewhere, both with Petrel's
# built-in tenders. A petreld already running at the default socket is
# reused; otherwise one is started for the demo and stopped afterwards.
# Nothing is left enabled or running on the host.
set -eu
cd "$(dirname "$0")/../.."
BIN="$PWD/bin"
SOCK=/run/petrel/petreld.sock

# 1. The host, before anything is installed.
if [ "$(uname -s)" != Linux ] || [ "$(uname -m)" != x86_64 ]; then
	echo "demo: Petrel's tenders run on Linux x86_64; this is $(uname -s) $(uname -m)" >&2
	exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "demo: run as root (petreld manages VMs, taps and /run/petrel): sudo make demo" >&2
	exit 1
fi
# Is KVM there? (Only a character device is opened: <> would create a
# missing /dev/kvm as a file.)
kvm_err=""
if [ ! -e /dev/kvm ]; then
	kvm_err="/dev/kvm does not exist"
elif [ ! -c /dev/kvm ]; then
	kvm_err="/dev/kvm is not a character device"
elif ! kvm_err=$( (exec 3<>/dev/kvm) 2>&1 ); then
	kvm_err="cannot open /dev/kvm: ${kvm_err##*: }"
fi
if [ -z "$kvm_err" ]; then
	target=hvt
	echo "demo: /dev/kvm opens read-write: hello runs on hvt (KVM) with Petrel's built-in hvt tender"
else
	target=spt
	echo "demo: no usable KVM ($kvm_err): hello runs on spt, Solo5's sandboxed-process target, with Petrel's built-in spt tender (no KVM needed)"
fi
GO=$(command -v go 2>/dev/null || echo /usr/local/go/bin/go)
if [ ! -x "$GO" ]; then
	echo "demo: Go 1.26 is needed on PATH or at /usr/local/go (https://go.dev/dl/)" >&2
	exit 1
fi

# 2. What the demo needs, idempotently.
need=""
for pkg in gcc libc6-dev make; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need="$need $pkg"
done
if [ -n "$need" ]; then
	echo "demo: installing Debian packages:$need"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
fi

# 3. Build.
echo "== building Petrel and its test unikernels"
make -s host guests GO="$GO"
PETREL="$BIN/petrel --socket $SOCK"

# 4. petreld: reuse a running one, else start one with the defaults.
started=""
if ! $PETREL version >/dev/null 2>&1; then
	log=$(mktemp /tmp/petreld-demo.XXXXXX.log)
	echo "== starting petreld with its embedded defaults (log: $log)"
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
echo "== petrel plugins"
$PETREL plugins

# 5. hello.
image="$BIN/guests/hello.$target"
echo "== petrel create hello bin/guests/hello.$target --arg=world"
status=0
$PETREL create hello "$image" --mem 32 --arg=world --force || status=$?
if [ "$status" -eq 7 ] && [ "$target" = hvt ]; then
	echo "demo: hvt cannot run here after all (see above): hello runs on spt instead"
	image="$BIN/guests/hello.spt"
	echo "== petrel create hello bin/guests/hello.spt --arg=world"
	$PETREL create hello "$image" --mem 32 --arg=world --force
elif [ "$status" -ne 0 ]; then
	exit "$status"
fi
echo "== petrel console hello --follow"
$PETREL console hello --follow
echo "== petrel info hello"
$PETREL info hello
$PETREL destroy hello
