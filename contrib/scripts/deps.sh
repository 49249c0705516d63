#!/bin/sh
# Installs what building and testing Petrel needs on Debian, idempotently:
# Debian packages (protoc, gcc, iproute2) and Go tools from the module proxy.
set -eu
export PATH="/usr/local/go/bin:$(go env GOPATH 2>/dev/null || echo /root/go)/bin:$PATH"

need=""
for pkg in protobuf-compiler gcc make iproute2 iputils-ping binutils; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need="$need $pkg"
done
if [ -n "$need" ]; then
	echo "installing Debian packages:$need"
	SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $need >/dev/null
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
