#!/bin/sh
# Installs what building and testing Petrel needs on Debian, idempotently:
# Debian packages (protoc, gcc, iproute2; InfluxDB, Prometheus, QEMU, a
# Linux kernel and busybox for the tests with real servers and guests) and
# Go tools from the module proxy.
set -eu
export PATH="/usr/local/go/bin:$(go env GOPATH 2>/dev/null || echo /root/go)/bin:$PATH"

need=""
for pkg in protobuf-compiler gcc make iproute2 iputils-ping binutils influxdb prometheus \
	qemu-system-x86 busybox-static linux-image-cloud-amd64 systemd groff-base debootstrap systemd-container; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need="$need $pkg"
done
if [ -n "$need" ]; then
	echo "installing Debian packages:$need"
	SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
	$SUDO apt-get update -qq
	# Packages that ship services must not start them here.
	printf '#!/bin/sh\nexit 101\n' > /tmp/petrel-policy-rc.d
	chmod +x /tmp/petrel-policy-rc.d
	[ -e /usr/sbin/policy-rc.d ] || { $SUDO cp /tmp/petrel-policy-rc.d /usr/sbin/policy-rc.d; cleanup_policy=1; }
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $need >/dev/null
	[ -z "${cleanup_policy:-}" ] || $SUDO rm -f /usr/sbin/policy-rc.d
fi

gobin="$(go env GOPATH)/bin"
install_tool() { # binary module@version
	if [ ! -x "$gobin/$1" ] || ! grep -qs "$2" "$gobin/.$1.version"; then
		echo "installing $2"
		go install "$2"
		echo "$2" > "$gobin/.$1.version"
	fi
}
install_tool protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
install_tool protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
install_tool staticcheck honnef.co/go/tools/cmd/staticcheck@v0.8.2
install_tool nfpm github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
