#!/bin/sh
# Runs a command as if this host had no /dev/kvm: in a private mount
# namespace whose /dev holds everything the host's does except the kvm
# node, the way a VM without nested virtualization looks. The host's own
# /dev is not changed. Used by the tests of Petrel's no-KVM paths and to
# run the whole suite as such a host would:
#
#   contrib/scripts/without-kvm.sh make check
#
# Needs root and unshare(1) from util-linux.
set -eu
if [ $# -eq 0 ]; then
	echo "usage: $0 COMMAND [ARGS...]" >&2
	exit 2
fi
if [ "${PETREL_WITHOUT_KVM_INNER:-}" != 1 ]; then
	PETREL_WITHOUT_KVM_INNER=1 exec unshare --mount --propagation private "$0" "$@"
fi
unset PETREL_WITHOUT_KVM_INNER
new=$(mktemp -d /tmp/petrel-dev.XXXXXX)
mount -t tmpfs -o mode=0755,nosuid tmpfs "$new"
for entry in /dev/* /dev/.[!.]*; do
	[ -e "$entry" ] || [ -L "$entry" ] || continue
	name=${entry#/dev/}
	[ "$name" = kvm ] && continue
	# A bound ptmx cannot find its devpts instance; the pts directory's own
	# multiplexer serves the same pseudo-terminals, as in containers.
	if [ "$name" = ptmx ] && [ -c /dev/pts/ptmx ]; then
		ln -s pts/ptmx "$new/ptmx"
		continue
	fi
	if [ -L "$entry" ]; then
		cp -P "$entry" "$new/$name"
	elif [ -d "$entry" ]; then
		mkdir "$new/$name"
		mount --rbind "$entry" "$new/$name"
	else
		: >"$new/$name"
		mount --bind "$entry" "$new/$name"
	fi
done
mount --move "$new" /dev
rmdir "$new"
exec "$@"
