#!/bin/sh
# Builds Petrel's Debian package with nfpm (contrib/packaging/nfpm.yaml):
#
#   contrib/packaging/build-deb.sh [BIN_DIR [OUT_DIR [PACKAGE]]]
#
# PACKAGE is petrel (the default: the host's daemon, endpoint, CLI and
# plugins, nfpm.yaml) or petrel-kubelet (the Kubernetes node agent alone,
# nfpm-kubelet.yaml, from BIN_DIR/petrel-kubelet).
#
# BIN_DIR holds the built binaries (default bin/, as `make build` leaves
# them) and, in BIN_DIR/guests, Petrel's test unikernels (`make guests`),
# shipped as examples in /usr/share/petrel/guests so that a VM can be
# deployed right after installing; the .deb is written to OUT_DIR (default
# BIN_DIR). It generates the example configuration (/etc/petrel/petreld.hcl:
# petreld's defaults, with the socket open to the group petrel), man pages
# and shell completions (`petrel gen-docs`) into a temporary directory first.
#
# Environment: VERSION (a Debian version; default from `git describe`),
# ARCH (default: dpkg's architecture), NFPM (the nfpm binary; default nfpm
# on PATH, then in GOPATH/bin; `make deps` installs it).
set -eu

cd "$(dirname "$0")/../.."
BIN=$(cd "${1:-bin}" && pwd)
OUT=$(mkdir -p "${2:-$BIN}" && cd "${2:-$BIN}" && pwd)
PACKAGE=${3:-petrel}
case $PACKAGE in
petrel | petrel-kubelet) ;;
*) echo "build-deb: unknown package $PACKAGE (petrel or petrel-kubelet)" >&2; exit 1 ;;
esac

# Petrel's own plugins, from the list the Makefile builds them from (the
# lines naming a plugin start with its name, in lower case).
PLUGINS=$(awk '$1 ~ /^[a-z0-9]/ { printf "%spetrel-plugin-%s", sep, $1; sep = "," }' plugins/catalog/plugins.txt)
[ -n "$PLUGINS" ] || { echo "build-deb: plugins/catalog/plugins.txt lists no plugins" >&2; exit 1; }

if [ "$PACKAGE" = petrel-kubelet ]; then
	[ -x "$BIN/petrel-kubelet" ] || { echo "build-deb: $BIN/petrel-kubelet is missing (run make build)" >&2; exit 1; }
else
for b in petrel petreld petrel-endpoint petrel-shim $(echo "$PLUGINS" | tr , ' '); do
	[ -x "$BIN/$b" ] || { echo "build-deb: $BIN/$b is missing (run make build)" >&2; exit 1; }
done
for g in hello exit fault blk net chatty; do
	for t in hvt spt; do
		[ -f "$BIN/guests/$g.$t" ] || { echo "build-deb: $BIN/guests/$g.$t is missing (run make guests)" >&2; exit 1; }
	done
done
fi

NFPM=${NFPM:-$(command -v nfpm || true)}
if [ -z "$NFPM" ]; then
	gobin="$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin"
	[ -x "$gobin/nfpm" ] && NFPM="$gobin/nfpm"
fi
[ -n "$NFPM" ] || { echo "build-deb: nfpm not found (make deps installs it)" >&2; exit 1; }

if [ -z "${VERSION:-}" ]; then
	# Debian versions must start with a digit: v1.2.3-4-gabc -> 1.2.3+4.gabc;
	# without a release tag: 0.0.0~git<commit>.
	VERSION=$(git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null | sed 's/^v//; s/-/+/; s/-/./g' || true)
	if [ -z "$VERSION" ]; then
		VERSION="0.0.0~git$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
		git diff --quiet HEAD 2>/dev/null || VERSION="$VERSION.dirty"
	fi
fi
ARCH=${ARCH:-$(dpkg --print-architecture 2>/dev/null || go env GOARCH)}

if [ "$PACKAGE" = petrel-kubelet ]; then
	export BIN VERSION ARCH
	"$NFPM" package --config contrib/packaging/nfpm-kubelet.yaml --packager deb --target "$OUT/petrel-kubelet_${VERSION}_${ARCH}.deb" >&2
	echo "$OUT/petrel-kubelet_${VERSION}_${ARCH}.deb"
	exit 0
fi

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT INT TERM

{
	echo "# petreld's configuration (petreld --config /etc/petrel/petreld.hcl)."
	echo "# It starts as a copy of the embedded defaults; only what differs from"
	echo "# them matters. The packaged service runs petreld with the group petrel,"
	echo "# and socket_mode below lets members of that group manage VMs;"
	echo "# remote_socket_mode and remote_socket_group let petrel-endpoint, and"
	echo "# only it, forward requests that carry a client certificate chain. The"
	echo "# reference is /usr/share/doc/petrel/configuration.md."
	echo
	"$BIN/petreld" --print-defaults | sed -e 's/^socket_mode = "0600"$/socket_mode = "0660"/' \
		-e 's/^remote_socket_mode = "0600"$/remote_socket_mode = "0660"/' \
		-e 's/^remote_socket_group = ""$/remote_socket_group = "petrel-endpoint"/'
} > "$STAGE/petreld.hcl"
for want in 'socket_mode = "0660"' 'remote_socket_mode = "0660"' 'remote_socket_group = "petrel-endpoint"'; do
	grep -qx "$want" "$STAGE/petreld.hcl" || { echo "build-deb: could not set $want in the example configuration" >&2; exit 1; }
done

"$BIN/petrel" gen-docs "$STAGE" >/dev/null
gzip -9n "$STAGE"/man/*.1

export BIN STAGE PLUGINS VERSION ARCH
"$NFPM" package --config contrib/packaging/nfpm.yaml --packager deb --target "$OUT/petrel_${VERSION}_${ARCH}.deb" >&2
echo "$OUT/petrel_${VERSION}_${ARCH}.deb"
