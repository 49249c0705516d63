#!/bin/bash
# Installs Petrel's Debian packages on a clean Debian 12 (bookworm) and runs
# the README's deploy there, as a reader would right after installing:
#
#   contrib/packaging/install-test.sh [BIN_DIR]
#
# BIN_DIR (default bin/) holds what `make build` and `make guests` leave;
# the packages, petrel and petrel-kubelet, are built from it with
# build-deb.sh. Steps:
#
#   1. a clean bookworm root: debootstrap --variant=minbase (plus systemd,
#      as every Debian install has), kept as a pristine tarball in the cache
#      and unpacked into a fresh directory on every run;
#   2. apt-get update in it, and the package's dependencies fetched
#      (apt-get install --download-only) while it shares the host's network;
#   3. the root is booted with `systemd-nspawn -b` with a private network
#      (petreld removes Petrel taps it does not own when it starts, so it
#      must not see the host's), /dev/net/tun and /dev/kvm where the host
#      has a usable one, so that the
#      package's scripts and petreld.service run under a real systemd.
#      Where systemd-nspawn is missing or cannot boot the root, it is a
#      chroot instead (/proc, /sys, /dev and an empty /run mounted), and
#      systemctl is replaced by what the unit does: petreld is started as
#      its ExecStart says (root, group petrel, umask 0077) in a network
#      namespace of its own, and stopped with SIGTERM before the package is
#      removed;
#   4. inside it, in /root, where the packages are in ./bin:
#        apt-get install ./bin/petrel_*.deb
#        systemctl enable --now petreld
#        apt-get install ./bin/petrel-kubelet_*.deb   (its unit must stay
#                                  disabled and stopped; it needs a cluster)
#        petrel-kubelet --help
#        apt-get purge petrel-kubelet       (petrel must keep working)
#        petrel doctor
#        petrel create hello /usr/share/petrel/guests/hello.hvt   (hello.spt
#                                  where the host has no usable /dev/kvm)
#        petrel console hello --follow      (must show the guest's greeting)
#        petrel info
#        petrel destroy hello
#        apt-get purge petrel
#      checking the result of each, and that no Petrel process is left and
#      the package's files are gone at the end.
#
# Everything mounted or started is unmounted, stopped and removed on every
# path, failures and interrupts included. The exit status is 0 only when
# every step passed.
#
# Environment:
#   PETREL_DEB_CACHE   where the pristine root is kept
#                      (default /var/cache/petrel/debootstrap)
#   PETREL_DEB_MIRROR  Debian mirror (default http://deb.debian.org/debian)
#   PETREL_DEB_MODE    auto (default: nspawn when it boots, else chroot),
#                      nspawn or chroot
#   NFPM, VERSION      passed to build-deb.sh
set -euo pipefail

SUITE=bookworm
VARIANT=minbase
# systemd-sysv makes systemd the root's init, as on any Debian install.
INCLUDE=systemd,systemd-sysv
CACHE=${PETREL_DEB_CACHE:-/var/cache/petrel/debootstrap}
MIRROR=${PETREL_DEB_MIRROR:-http://deb.debian.org/debian}
MODE=${PETREL_DEB_MODE:-auto}
# The pristine root is rebuilt when it is older than this many days, so the
# upgrade that apt does on installing stays small.
MAX_AGE_DAYS=30
BOOT_TIMEOUT=90

START=$(date +%s)
say() { printf '\n== [%3ss] %s\n' "$(($(date +%s) - START))" "$*"; }
note() { printf '   %s\n' "$*"; }
fail() {
	printf '\ninstall-test: FAIL: %s\n' "$*" >&2
	exit 1
}

cd "$(dirname "$0")/../.."
REPO=$PWD
BIN=$(cd "${1:-bin}" && pwd) || fail "no binary directory ${1:-bin} (run make build guests)"

[ "$(id -u)" -eq 0 ] || fail "run as root (debootstrap, mounts, chroot)"
command -v debootstrap >/dev/null || fail "debootstrap not found (apt-get install debootstrap, or make deps)"
# hello runs on hvt where /dev/kvm is usable and on spt (the built-in
# tender, no KVM needed) elsewhere, as the README says.
if [ -c /dev/kvm ] && (exec 3<>/dev/kvm) 2>/dev/null; then
	TARGET=hvt
	KVM_BIND=(--bind=/dev/kvm)
else
	TARGET=spt
	KVM_BIND=()
fi
[ -c /dev/net/tun ] || fail "/dev/net/tun is missing"
case $MODE in auto | nspawn | chroot) ;; *) fail "PETREL_DEB_MODE=$MODE: want auto, nspawn or chroot" ;; esac
if [ "$MODE" = nspawn ] && ! command -v systemd-nspawn >/dev/null; then
	fail "PETREL_DEB_MODE=nspawn but systemd-nspawn is not installed (apt-get install systemd-container)"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/petrel-install-test.XXXXXX")
ROOT=$WORK/root
NSPAWN_PID=""
LEADER=""
PETRELD_PID=""
BUILD_TMP=""
RESULT=FAIL

# mounts_under DIR prints the mount points at or below DIR, deepest first.
mounts_under() {
	awk -v d="$1" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/self/mounts | sort -r
}

# unmount_all DIR unmounts everything at or below DIR; lazily when a plain
# unmount is refused (a process still holding a file there).
unmount_all() {
	local m
	for m in $(mounts_under "$1"); do
		umount "$m" 2>/dev/null || umount -l "$m" || echo "install-test: cannot unmount $m" >&2
	done
}

# remove_tree DIR deletes DIR once nothing is mounted below it, never
# crossing into another file system.
remove_tree() {
	[ -n "$1" ] && [ -d "$1" ] || return 0
	unmount_all "$1"
	if [ -n "$(mounts_under "$1")" ]; then
		echo "install-test: $1 still has mounts; not removing it:" >&2
		mounts_under "$1" >&2
		return 1
	fi
	rm -rf --one-file-system "$1"
}

# rooted_pids prints the host PIDs of processes whose root is the test root
# (the chroot's processes).
rooted_pids() {
	local p r
	for p in /proc/[0-9]*; do
		r=$(readlink "$p/root" 2>/dev/null) || continue
		[ "$r" = "$ROOT" ] && echo "${p#/proc/}"
	done
	return 0
}

stop_container() {
	[ -n "$NSPAWN_PID" ] || return 0
	if kill -0 "$NSPAWN_PID" 2>/dev/null; then
		# nspawn turns SIGTERM into an orderly shutdown of the container.
		kill -TERM "$NSPAWN_PID" 2>/dev/null || true
		local i=0
		while kill -0 "$NSPAWN_PID" 2>/dev/null && [ $i -lt 300 ]; do
			sleep 0.1
			i=$((i + 1))
		done
		if kill -0 "$NSPAWN_PID" 2>/dev/null; then
			echo "install-test: the container did not shut down in 30s; killing it" >&2
			kill -KILL "$NSPAWN_PID" 2>/dev/null || true
		fi
	fi
	wait "$NSPAWN_PID" 2>/dev/null || true
	NSPAWN_PID=""
	LEADER=""
}

stop_chroot_processes() {
	local pids
	pids=$(rooted_pids)
	[ -n "$pids" ] || return 0
	# shellcheck disable=SC2086
	kill -TERM $pids 2>/dev/null || true
	local i=0
	while [ -n "$(rooted_pids)" ] && [ $i -lt 100 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	pids=$(rooted_pids)
	# shellcheck disable=SC2086
	[ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
	[ -z "$PETRELD_PID" ] || wait "$PETRELD_PID" 2>/dev/null || true
	PETRELD_PID=""
}

cleanup() {
	local status=$?
	trap - EXIT INT TERM
	set +e
	say "cleaning up"
	stop_container
	[ -d "$ROOT" ] && stop_chroot_processes
	remove_tree "$WORK" || status=1
	[ -z "$BUILD_TMP" ] || remove_tree "$BUILD_TMP" || status=1
	[ "$RESULT" = PASS ] && [ $status -eq 0 ] || RESULT=FAIL
	if [ "$RESULT" = PASS ]; then
		printf '\ninstall-test: PASS (%ss)\n' "$(($(date +%s) - START))"
	else
		printf '\ninstall-test: FAILED (%ss)\n' "$(($(date +%s) - START))" >&2
		[ $status -ne 0 ] || status=1
	fi
	exit $status
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# in_root CMD... runs CMD inside the test root as root, with a clean
# environment and /root as working directory.
in_root() {
	local env=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
		HOME=/root LANG=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive)
	# The working directory is set by a shell inside: nsenter's --wd
	# resolves the directory before entering the root.
	local enter=(chroot "$ROOT")
	[ -z "$LEADER" ] || enter=(nsenter --target "$LEADER" --all --root)
	"${enter[@]}" /bin/sh -c 'cd /root && exec "$@"' sh "${env[@]}" "$@"
}

# step CMD... prints the command as a reader would type it, runs it inside
# the root and fails the test when it fails.
step() {
	say "# $*"
	in_root "$@" || fail "'$*' exited with status $?"
}

# ---------------------------------------------------------------- package
say "building the packages from $BIN (contrib/packaging/build-deb.sh)"
mkdir -p "$WORK/deb"
DEB=$("$REPO/contrib/packaging/build-deb.sh" "$BIN" "$WORK/deb") || fail "build-deb.sh failed"
KUBELET_DEB=$("$REPO/contrib/packaging/build-deb.sh" "$BIN" "$WORK/deb" petrel-kubelet) || fail "build-deb.sh petrel-kubelet failed"
for d in "$DEB" "$KUBELET_DEB"; do
	note "$d"
	note "$(dpkg-deb -f "$d" Package Version Architecture Depends Recommends | tr '\n' ' ')"
done

# ---------------------------------------------------------- pristine root
ARCH=$(dpkg --print-architecture)
TARBALL=$CACHE/$SUITE-$VARIANT-${INCLUDE//,/-}-$ARCH.tar
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
say "waiting for the cache lock $CACHE/.lock"
flock 9
if [ -s "$TARBALL" ] && [ -z "$(find "$TARBALL" -mtime +$MAX_AGE_DAYS)" ]; then
	say "using the cached pristine root $TARBALL ($(date -r "$TARBALL" '+%F %T'))"
else
	say "debootstrap --variant=$VARIANT --include=$INCLUDE $SUITE from $MIRROR (into the cache, once)"
	BUILD_TMP=$(mktemp -d "$CACHE/build.XXXXXX")
	if ! debootstrap --variant="$VARIANT" --include="$INCLUDE" "$SUITE" "$BUILD_TMP/root" "$MIRROR" >"$BUILD_TMP/log" 2>&1; then
		tail -n 40 "$BUILD_TMP/log" >&2
		fail "debootstrap failed (log above)"
	fi
	tar -C "$BUILD_TMP/root" --numeric-owner --xattrs --xattrs-include='*' -cf "$BUILD_TMP/root.tar" . ||
		fail "could not archive the debootstrapped root"
	mv "$BUILD_TMP/root.tar" "$TARBALL"
	remove_tree "$BUILD_TMP" || fail "could not remove $BUILD_TMP"
	BUILD_TMP=""
	note "cached $TARBALL ($(du -h "$TARBALL" | cut -f1))"
fi
say "unpacking a fresh copy into $ROOT"
mkdir "$ROOT"
tar -C "$ROOT" --numeric-owner --xattrs --xattrs-include='*' -xpf "$TARBALL" || fail "could not unpack $TARBALL"
flock -u 9
exec 9>&-

mkdir -p "$ROOT/root/bin"
cp "$DEB" "$KUBELET_DEB" "$ROOT/root/bin/"
# No progress meters in the log.
echo 'Dpkg::Use-Pty "0";' >"$ROOT/etc/apt/apt.conf.d/90petrel-install-test"
# The root's machine-id is empty in the tarball: systemd makes one on boot.
echo "petrel-install-test" >"$ROOT/etc/hostname"
# debootstrap leaves /etc/hosts to the installer; a Debian host has one.
[ -s "$ROOT/etc/hosts" ] || printf '127.0.0.1\tlocalhost\n127.0.1.1\tpetrel-install-test\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"

# mount_chroot mounts what programs in the root expect: /proc, /sys, /dev
# (the host's, so /dev/kvm and /dev/net/tun too) and an empty /run.
mount_chroot() {
	mount -t proc proc "$ROOT/proc"
	mount --rbind /sys "$ROOT/sys"
	mount --make-rslave "$ROOT/sys"
	mount --rbind /dev "$ROOT/dev"
	mount --make-rslave "$ROOT/dev"
	mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$ROOT/run"
}

# --------------------------------------------------------- package lists
# petreld removes, when it starts, every tap Petrel made that none of its
# VMs owns: it must not share the host's network namespace, where other
# Petrel daemons (other tests, a real deployment) keep theirs. So the root
# runs petreld in a network namespace of its own, without a route to the
# mirror; what the package depends on is fetched first.
mount_chroot
say "apt-get update (the clean root has no package lists yet)"
in_root apt-get update -q >"$WORK/apt-update.log" 2>&1 || {
	cat "$WORK/apt-update.log" >&2
	fail "apt-get update failed"
}
say "apt-get install --download-only: fetching the dependencies while the root has the network"
in_root apt-get install --download-only -y -q ./bin/"$(basename "$DEB")" ./bin/"$(basename "$KUBELET_DEB")" >"$WORK/apt-download.log" 2>&1 || {
	cat "$WORK/apt-download.log" >&2
	fail "apt-get could not fetch what the package depends on"
}

# ------------------------------------------------------------------- boot
# boot_container boots the root with systemd-nspawn and waits until its
# systemd has finished starting up; it returns non-zero when it cannot.
boot_container() {
	local machine
	machine="petrel-test-$(basename "$WORK" | tr -cd 'a-zA-Z0-9')"
	# --register=no and --keep-unit: no systemd (machined) is needed on
	# the host. --private-network: only a loopback device, and
	# CAP_NET_ADMIN over it, which petreld.service needs for taps.
	systemd-nspawn --quiet --boot --directory="$ROOT" --machine="$machine" \
		--register=no --keep-unit --console=passive --private-network \
		"${KVM_BIND[@]}" --bind=/dev/net/tun >"$WORK/nspawn.log" 2>&1 </dev/null &
	NSPAWN_PID=$!
	local i=0 s
	while [ -z "$LEADER" ]; do
		for s in /proc/[0-9]*/stat; do
			# Fields after the command name: state, ppid, ...
			read -r -a f <<<"$(sed 's/.*) //' "$s" 2>/dev/null)" || continue
			if [ "${f[1]:-}" = "$NSPAWN_PID" ]; then
				LEADER=${s#/proc/}
				LEADER=${LEADER%/stat}
				break
			fi
		done
		[ -n "$LEADER" ] && break
		kill -0 "$NSPAWN_PID" 2>/dev/null || return 1
		i=$((i + 1))
		[ $i -lt 100 ] || return 1
		sleep 0.1
	done
	local state
	state=$(timeout "$BOOT_TIMEOUT" nsenter --target "$LEADER" --all --root \
		env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin systemctl is-system-running --wait 2>&1) || true
	note "systemd in the container: $state"
	case $state in
	running) return 0 ;;
	degraded)
		in_root systemctl --failed --no-legend || true
		return 0
		;;
	*) return 1 ;;
	esac
}

if [ "$MODE" != chroot ] && command -v systemd-nspawn >/dev/null; then
	say "booting the root with systemd-nspawn -b (private network)"
	unmount_all "$ROOT"
	if boot_container; then
		MODE=nspawn
	else
		echo "install-test: systemd-nspawn could not boot the root:" >&2
		tail -n 30 "$WORK/nspawn.log" >&2 || true
		[ "$MODE" = auto ] || fail "PETREL_DEB_MODE=nspawn and the container did not boot"
		stop_container
		MODE=chroot
		mount_chroot
	fi
elif [ "$MODE" = auto ]; then
	note "systemd-nspawn is not installed (package systemd-container)"
	MODE=chroot
fi
if [ "$MODE" = chroot ]; then
	say "using a chroot: systemctl is replaced by what petreld.service does"
	# Services must not start from maintainer scripts in a chroot.
	printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
	chmod 0755 "$ROOT/usr/sbin/policy-rc.d"
fi
[ "$TARGET" = spt ] || in_root test -c /dev/kvm || fail "/dev/kvm is not visible in the root"
in_root test -c /dev/net/tun || fail "/dev/net/tun is not visible in the root"

# ---------------------------------------------------------------- install
step apt-get install -y ./bin/"$(basename "$DEB")"
in_root dpkg -s petrel >/dev/null || fail "petrel is not installed after apt-get install"
# The plugins petreld's defaults enable, from the list of Petrel's plugins.
DEFAULT_PLUGINS=$(awk '$1 ~ /^[a-z0-9]/ && $3 == "enabled" { print $1 }' plugins/catalog/plugins.txt)
[ -n "$DEFAULT_PLUGINS" ] || fail "plugins/catalog/plugins.txt lists no plugin enabled by default"
for f in /usr/bin/petrel /usr/bin/petreld /usr/bin/petrel-endpoint /usr/libexec/petrel/petrel-shim \
	$(for p in $DEFAULT_PLUGINS; do echo "/usr/libexec/petrel/petrel-plugin-$p"; done) \
	/usr/lib/systemd/system/petreld.service /etc/petrel/petreld.hcl /usr/share/petrel/guests/hello.hvt /usr/share/petrel/guests/hello.spt; do
	in_root test -e "$f" || fail "the installed package lacks $f"
done
in_root getent group petrel >/dev/null || fail "postinst did not create the group petrel"

if [ "$MODE" = nspawn ]; then
	step systemctl enable --now petreld
	in_root systemctl is-enabled --quiet petreld || fail "petreld.service is not enabled"
else
	EXEC_START=$(sed -n 's/^ExecStart=//p' "$ROOT/usr/lib/systemd/system/petreld.service")
	[ -n "$EXEC_START" ] || fail "no ExecStart in the installed petreld.service"
	say "# systemctl enable --now petreld  ->  $EXEC_START (root, group petrel, umask 0077, own network namespace)"
	# shellcheck disable=SC2086 # ExecStart is split into words as systemd does.
	unshare --net chroot --userspec=root:petrel "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
		/bin/sh -c 'umask 0077 && exec "$@"' sh $EXEC_START >"$WORK/petreld.log" 2>&1 </dev/null &
	PETRELD_PID=$!
fi

# wait_petreld waits until petreld answers on its socket, and shows its
# log when it does not within 15 s (or, in a chroot, when it exited).
wait_petreld() {
	say "waiting for petreld to answer on /run/petrel/petreld.sock"
	local i=0
	until in_root petrel version >/dev/null 2>&1; do
		i=$((i + 1))
		if [ $i -gt 150 ]; then
			if [ "$MODE" = nspawn ]; then
				in_root systemctl status --no-pager petreld >&2 || true
				in_root journalctl --no-pager -n 30 -u petreld >&2 || true
			else
				cat "$WORK/petreld.log" >&2
			fi
			fail "petreld did not answer within 15s"
		fi
		if [ "$MODE" = chroot ] && ! kill -0 "$PETRELD_PID" 2>/dev/null; then
			cat "$WORK/petreld.log" >&2
			fail "petreld exited"
		fi
		sleep 0.1
	done
}
wait_petreld
[ "$MODE" = chroot ] || in_root systemctl is-active --quiet petreld || fail "petreld.service is not active"

# ------------------------------------------------------------ node agent
# petrel-kubelet, the Kubernetes node agent, is a package of its own. It
# installs beside petrel with its unit disabled and stopped (it needs a
# cluster to join and the cluster's certificate), and removing it leaves
# petrel as it was: the deploy below runs after the removal.
KUBELET_FILES="/usr/bin/petrel-kubelet /usr/lib/systemd/system/petrel-kubelet.service /etc/default/petrel-kubelet
	/etc/petrel/kubelet /usr/share/doc/petrel-kubelet"
# kubelet_processes prints the root's petrel-kubelet processes.
kubelet_processes() {
	local p
	if [ "$MODE" = nspawn ]; then
		in_root sh -c 'for p in /proc/[0-9]*; do c=$(cat $p/comm 2>/dev/null) && echo "${p#/proc/} $c"; done' |
			grep -E ' petrel-kubelet$' || true
	else
		for p in $(rooted_pids); do
			tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -E '(^|/)petrel-kubelet( |$)' | sed "s/^/$p /" || true
		done
	fi
}
step apt-get install -y ./bin/"$(basename "$KUBELET_DEB")"
in_root dpkg -s petrel-kubelet >/dev/null || fail "petrel-kubelet is not installed after apt-get install"
for f in $KUBELET_FILES; do
	in_root test -e "$f" || fail "the installed petrel-kubelet package lacks $f"
done
say "petrel-kubelet.service is installed disabled, and nothing runs the agent"
links=$(in_root find /etc/systemd/system -name petrel-kubelet.service) || fail "cannot list /etc/systemd/system"
[ -z "$links" ] || fail "petrel-kubelet.service is enabled after install: $links"
if [ "$MODE" = nspawn ]; then
	state=$(in_root systemctl is-enabled petrel-kubelet.service) || true
	note "systemctl is-enabled petrel-kubelet.service: $state"
	[ "$state" = disabled ] || fail "petrel-kubelet.service is $state after install, not disabled"
	state=$(in_root systemctl is-active petrel-kubelet.service) || true
	note "systemctl is-active petrel-kubelet.service: $state"
	[ "$state" = inactive ] || fail "petrel-kubelet.service is $state after install, not inactive"
fi
left=$(kubelet_processes)
[ -z "$left" ] || fail "petrel-kubelet runs after install:"$'\n'"$left"
say "# petrel-kubelet --help"
in_root petrel-kubelet --help >"$WORK/kubelet-help.out" 2>&1 || {
	cat "$WORK/kubelet-help.out" >&2
	fail "petrel-kubelet --help exited with status $?"
}
head -n 5 "$WORK/kubelet-help.out"
grep -q -- '-node-ip' "$WORK/kubelet-help.out" || fail "petrel-kubelet --help does not describe its flags"
step apt-get purge -y petrel-kubelet
in_root dpkg -s petrel-kubelet >/dev/null 2>&1 && fail "petrel-kubelet is still installed after apt-get purge"
for f in $KUBELET_FILES; do
	in_root test ! -e "$f" || fail "$f is left after apt-get purge petrel-kubelet"
done
say "petrel is as it was: installed, petreld answering"
in_root dpkg -s petrel >/dev/null || fail "apt-get purge petrel-kubelet removed petrel"
for f in /usr/bin/petrel /usr/bin/petreld /etc/petrel/petreld.hcl /usr/lib/systemd/system/petreld.service; do
	in_root test -e "$f" || fail "$f is gone after apt-get purge petrel-kubelet"
done
in_root petrel version || fail "petreld does not answer after apt-get purge petrel-kubelet"
[ "$MODE" = chroot ] || in_root systemctl is-active --quiet petreld || fail "petreld.service is not active after apt-get purge petrel-kubelet"

# -------------------------------------------------------------- deploy
say "# petrel doctor"
in_root petrel doctor | tee "$WORK/doctor.out" || fail "petrel doctor found a failure"
for p in $DEFAULT_PLUGINS; do
	grep -q "plugin .*/usr/libexec/petrel/petrel-plugin-$p" "$WORK/doctor.out" ||
		fail "petrel doctor does not see /usr/libexec/petrel/petrel-plugin-$p"
done

say "# petrel plugins"
in_root petrel plugins | tee "$WORK/plugins.out" || fail "petrel plugins failed"
for p in $DEFAULT_PLUGINS; do
	grep -qw "^$p" "$WORK/plugins.out" || fail "petreld did not load the plugin $p"
done
# hello needs hvt (KVM) or spt (its built-in tender); networked VMs need
# bridge. qemu needs qemu-system-x86, which the package only suggests.
say "hello runs on $TARGET here"
for p in $TARGET bridge; do
	grep -Eq "^$p +[a-z]+ +[^ ]+ +healthy " "$WORK/plugins.out" || fail "the plugin $p is not healthy"
done

step petrel create hello /usr/share/petrel/guests/hello.$TARGET

say "# petrel console hello --follow"
in_root timeout 60 petrel console hello --follow | tee "$WORK/console.out" ||
	fail "petrel console hello --follow failed or did not end within 60s"
grep -q "Hello from Petrel" "$WORK/console.out" || fail "the console does not show the guest's greeting"

say "# petrel info"
in_root petrel info | tee "$WORK/info.out" || fail "petrel info failed"
grep -qw hello "$WORK/info.out" || fail "petrel info does not list hello"
grep -qw exited "$WORK/info.out" || fail "hello did not exit (petrel info above)"

step petrel destroy hello
in_root petrel info >"$WORK/info.out" || fail "petrel info failed after destroy"
! grep -qw hello "$WORK/info.out" || fail "hello is still listed after petrel destroy"

# ------------------------------------------------------ remote management
# The README tour's second step with the packaged units: a root CA, the
# socket-activated endpoint, a tenant (alice) with a delegated policy
# deploying remotely, a sub-delegation (bob) that cannot exceed hers, and
# a revocation taking effect without restarts. It needs systemd (socket
# activation), so it runs only when the root is booted with nspawn.
# expect_exit CODE CMD... runs CMD in the root and fails unless it exits
# with CODE.
expect_exit() {
	local want=$1 got=0
	shift
	say "# $* (must exit $want)"
	in_root "$@" || got=$?
	[ "$got" = "$want" ] || fail "'$*' exited with status $got, not $want"
}
if [ "$MODE" = nspawn ]; then
	step petrel ca init /etc/petrel/ca
	say "# in /etc/petrel/petreld.hcl, set ca_file and revocation_file"
	in_root sed -i -e 's|^ca_file = ""|ca_file = "/etc/petrel/ca/ca.pem"|' \
		-e 's|^revocation_file = ""|revocation_file = "/etc/petrel/ca/revoked.json"|' /etc/petrel/petreld.hcl ||
		fail "could not edit /etc/petrel/petreld.hcl"
	[ "$(in_root grep -c '^[a-z_]*_file = "/etc/petrel/ca/' /etc/petrel/petreld.hcl)" = 2 ] ||
		fail "/etc/petrel/petreld.hcl has no ca_file and revocation_file lines to set"
	step systemctl restart petreld
	wait_petreld
	step systemctl enable --now petrel-endpoint.socket
	step cp /etc/petrel/ca/ca.pem ca.pem
	step petrel ca csr alice --key-out alice.key --out alice.csr
	step petrel --ca /etc/petrel/ca/ca.pem --ca-key /etc/petrel/ca/ca.key ca sign-policy alice.csr --vms 2 --mem 256 --cpu 0 --out alice.pem
	ALICE=(--destination localhost --ca alice.pem --ca-key alice.key --server-ca ca.pem)
	say "# petrel ${ALICE[*]} create web /usr/share/petrel/guests/hello.$TARGET --mem 64"
	if ! in_root petrel "${ALICE[@]}" create web /usr/share/petrel/guests/hello.$TARGET --mem 64; then
		in_root systemctl status --no-pager petrel-endpoint.socket petrel-endpoint.service >&2 || true
		in_root journalctl --no-pager -n 30 -u petrel-endpoint >&2 || true
		fail "alice's remote create failed"
	fi
	say "# petrel ${ALICE[*]} console web"
	for i in $(seq 50); do
		in_root petrel "${ALICE[@]}" console web >"$WORK/remote-console.out" 2>&1 || true
		grep -q "Hello from Petrel" "$WORK/remote-console.out" && break
		sleep 0.2
	done
	cat "$WORK/remote-console.out"
	grep -q "Hello from Petrel" "$WORK/remote-console.out" || fail "alice's remote console does not show the guest's greeting"
	in_root petrel info >"$WORK/info-remote.out" || fail "petrel info failed"
	grep -qw "alice:web" "$WORK/info-remote.out" || fail "the host does not list alice:web"
	say "# the endpoint reaches petreld on petreld-remote.sock (and its files socket, for its pipes), and only there"
	for sock in petreld-remote.sock petreld-remote.sock.files; do
		sock_owner=$(in_root stat -c '%U:%G %a' /run/petrel/$sock) || fail "no /run/petrel/$sock"
		note "/run/petrel/$sock: $sock_owner"
		[ "$sock_owner" = "root:petrel-endpoint 660" ] || fail "$sock is $sock_owner, not root:petrel-endpoint 660"
	done
	say "# local files are passed beside the administrators' socket, with its owner and mode"
	admin_owner=$(in_root stat -c '%U:%G %a' /run/petrel/petreld.sock) || fail "no /run/petrel/petreld.sock"
	files_owner=$(in_root stat -c '%U:%G %a' /run/petrel/petreld.sock.files) || fail "no /run/petrel/petreld.sock.files"
	note "/run/petrel/petreld.sock: $admin_owner; petreld.sock.files: $files_owner"
	[ "$files_owner" = "$admin_owner" ] || fail "petreld.sock.files is $files_owner, not $admin_owner as petreld.sock"
	groups=$(in_root id -nG petrel-endpoint) || fail "no user petrel-endpoint"
	note "petrel-endpoint's groups: $groups"
	! echo "$groups" | tr ' ' '\n' | grep -qx petrel || fail "petrel-endpoint is in the group petrel: it could open the administrators' socket"
	expect_exit 10 petrel "${ALICE[@]}" create big /usr/share/petrel/guests/hello.$TARGET --mem 512

	step petrel ca csr bob --key-out bob.key --out bob.csr
	expect_exit 10 petrel --ca alice.pem --ca-key alice.key ca sign-policy bob.csr --vms 1 --mem 512 --out bob.pem
	step petrel --ca alice.pem --ca-key alice.key ca sign-policy bob.csr --vms 1 --mem 64 --out bob.pem
	BOB=(--destination localhost --ca bob.pem --ca-key bob.key --server-ca ca.pem)
	step petrel "${BOB[@]}" create api /usr/share/petrel/guests/hello.$TARGET --mem 64
	in_root petrel info >"$WORK/info-remote.out" || fail "petrel info failed"
	grep -qw "alice:bob:api" "$WORK/info-remote.out" || fail "the host does not list alice:bob:api"
	step petrel ca revoke --list /etc/petrel/ca/revoked.json bob.pem
	say "# petrel ${BOB[*]} info (must be refused once the revocation is read)"
	refused=""
	for i in $(seq 50); do
		if ! in_root petrel "${BOB[@]}" info >"$WORK/bob.out" 2>&1; then refused=yes && break; fi
		sleep 0.2
	done
	cat "$WORK/bob.out"
	[ -n "$refused" ] || fail "bob's certificate still works 10s after its revocation"
	grep -qi "revoked" "$WORK/bob.out" || fail "bob was refused, but not for the revocation"
	step petrel "${ALICE[@]}" info
	step petrel destroy alice:bob:api
	step petrel destroy alice:web
	step systemctl disable --now petrel-endpoint.socket petrel-endpoint.service
else
	say "remote management: skipped in chroot mode (socket activation needs systemd)"
fi

# ---------------------------------------------------------------- remove
if [ "$MODE" = chroot ]; then
	say "# systemctl stop petreld  ->  SIGTERM to petreld (the unit's KillSignal)"
	kill -TERM "$PETRELD_PID"
	i=0
	while kill -0 "$PETRELD_PID" 2>/dev/null; do
		i=$((i + 1))
		[ $i -le 300 ] || fail "petreld did not stop within 30s of SIGTERM"
		sleep 0.1
	done
	wait "$PETRELD_PID" || fail "petreld exited with status $? on SIGTERM"
	PETRELD_PID=""
fi
step apt-get purge -y petrel
in_root dpkg -s petrel >/dev/null 2>&1 && fail "petrel is still installed after apt-get purge"
for f in /usr/bin/petrel /usr/bin/petreld /usr/libexec/petrel /etc/petrel/petreld.hcl \
	/usr/lib/systemd/system/petreld.service /usr/share/petrel; do
	in_root test ! -e "$f" || fail "$f is left after apt-get purge"
done

say "checking that nothing of Petrel is left running"
if [ "$MODE" = nspawn ]; then
	in_root systemctl is-active --quiet petreld && fail "petreld.service is still active after purge"
	left=$(in_root sh -c 'for p in /proc/[0-9]*; do c=$(cat $p/comm 2>/dev/null) && echo "${p#/proc/} $c"; done')
	left=$(echo "$left" | grep -E ' (petrel|solo5|qemu)' || true)
else
	left=""
	for p in $(rooted_pids); do left="$left$p $(cat "/proc/$p/cmdline" 2>/dev/null | tr '\0' ' ')"$'\n'; done
fi
[ -z "$left" ] || fail "processes left after removing the package:"$'\n'"$left"
note "none"

RESULT=PASS
