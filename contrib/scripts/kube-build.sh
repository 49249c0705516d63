#!/bin/sh
# Builds the Kubernetes control plane that the fleet end-to-end test
# (core/integration TestFleet*) runs against: kube-apiserver,
# kube-controller-manager and kube-scheduler, from the pinned module in
# contrib/kube, into bin/kube/. The first build takes a while (about 13
# CPU-minutes); Go's build cache makes later ones take seconds.
set -eu
cd "$(dirname "$0")/../.."
GO=${GO:-$(command -v go 2>/dev/null || echo /usr/local/go/bin/go)}
out=$PWD/bin/kube
mkdir -p "$out"
cd contrib/kube
start=$(date +%s)
"$GO" build -trimpath -o "$out/" \
	k8s.io/kubernetes/cmd/kube-apiserver \
	k8s.io/kubernetes/cmd/kube-controller-manager \
	k8s.io/kubernetes/cmd/kube-scheduler
echo "kube-build: bin/kube built in $(( $(date +%s) - start ))s"
