#!/bin/sh
# Installs what building and testing Petrel needs on Debian, idempotently:
# Debian packages (protoc, gcc, iproute2; InfluxDB, Prometheus, QEMU, a
# Linux kernel and busybox, docker-registry for the tests with real
# servers, guests and registries;
# chromium and node for the web console's browser test), Go tools from the
# module proxy, and the browser test's npm packages (playwright-core, from
# its lock file; it never downloads a browser); etcd and kubectl for the
# fleet test, whose control plane bin/kube/ the Makefile builds.
set -eu
export PATH="/usr/local/go/bin:$(go env GOPATH 2>/dev/null || echo /root/go)/bin:$PATH"

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
need=""
for pkg in protobuf-compiler gcc libc6-dev make iproute2 iputils-ping binutils influxdb prometheus \
	qemu-system-x86 busybox-static linux-image-cloud-amd64 systemd groff-base debootstrap systemd-container \
	chromium docker-registry etcd-server; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need="$need $pkg"
done
# Node and npm, for the browser test, from Debian unless already installed
# some other way (NodeSource's nodejs carries npm).
command -v npm >/dev/null 2>&1 || need="$need nodejs npm"
# kubectl for the fleet test, from Debian unless one is installed already.
command -v kubectl >/dev/null 2>&1 || need="$need kubernetes-client"
if [ -n "$need" ]; then
	echo "installing Debian packages:$need"
	$SUDO apt-get update -qq
	# Packages that ship services must not start them here: a policy-rc.d
	# refuses while they install, and is removed again on every path, so a
	# failed install cannot leave the host unable to start services.
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT INT TERM
		printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
		$SUDO chmod 0755 /usr/sbin/policy-rc.d
	fi
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $need >/dev/null
	$SUDO rm -f /usr/sbin/policy-rc.d
	trap - EXIT INT TERM
fi

# The tests start their own docker-registry, InfluxDB, Prometheus and
# etcd on loopback; the system services Debian's packages enable must not
# run (nor start at the next boot) on a build host.
for unit in docker-registry:docker-registry influxdb:influxdb prometheus:prometheus etcd-server:etcd; do
	pkg=${unit%%:*} svc=${unit#*:}
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || continue
	if [ -d /run/systemd/system ]; then
		$SUDO systemctl disable --now "$svc.service" >/dev/null 2>&1 || true
	elif command -v deb-systemd-helper >/dev/null 2>&1; then
		$SUDO deb-systemd-helper disable "$svc.service" >/dev/null 2>&1 || true
	fi
	if command -v update-rc.d >/dev/null 2>&1 && [ -e "/etc/init.d/$svc" ]; then
		$SUDO update-rc.d "$svc" disable >/dev/null 2>&1 || true
	fi
done

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

# The web console's browser test (core/integration TestWebUI) drives
# Debian's chromium with playwright-core, installed from the committed lock
# file, again only when the lock file changed since the last install.
webui="$(dirname "$0")/../webui-test"
if command -v npm >/dev/null 2>&1 && ! cmp -s "$webui/package-lock.json" "$webui/node_modules/.package-lock.json.installed"; then
	echo "installing the web console test's npm packages"
	(cd "$webui" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error) &&
		cp "$webui/package-lock.json" "$webui/node_modules/.package-lock.json.installed"
fi
