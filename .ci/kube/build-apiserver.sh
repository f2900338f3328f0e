#!/usr/bin/env bash
# Builds kube-apiserver v1.20.2 from Debian bookworm's `kubernetes` source package with Debian's Go 1.19
# and installs Debian's etcd-server. The binary is cached in $INFERNO_KUBE_CACHE/bin (default
# /var/cache/inferno-mip-kube) and reused when present, so only the first run on a machine pays the
# ~10 minutes (2 cores) and ~2 GB of disk. Needs root for apt-get.
set -euo pipefail
W=${INFERNO_KUBE_CACHE:-/var/cache/inferno-mip-kube}
BIN=$W/bin/kube-apiserver
mkdir -p "$W/bin"
# one build at a time per machine; a second caller waits and then finds the binary
exec 9>"$W/.build.lock"
flock 9
if [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1 && command -v etcd >/dev/null; then
  echo "kube-apiserver cached: $BIN ($("$BIN" --version))"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Go 1.19; reflect2 1.0.2 (the vendored 1.0.1 breaks on Go >= 1.18); etcd 3.4; openssl and curl for run-apiserver.sh
apt-get install -y -qq --no-install-recommends golang-1.19-go golang-github-modern-go-reflect2-dev etcd-server \
  openssl curl ca-certificates dpkg-dev >/dev/null
if [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1; then
  echo "kube-apiserver cached: $BIN"; exit 0
fi
mkdir -p "$W/src" "$W/srcapt/lists/partial"
# The source package through a private deb-src list (leaves /etc/apt alone), from the Debian mirror apt
# already uses: the first non-security URI of an active deb822 or one-line source.
MIRROR=$( { grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources || true;
            grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list || true; } \
          | awk '{print $2}' | grep -i debian | grep -v security | head -1 || true )
MIRROR=${MIRROR:-http://deb.debian.org/debian}
echo "deb-src $MIRROR bookworm main" > "$W/srcapt/src.list"
APTO=(-o "Dir::Etc::SourceList=$W/srcapt/src.list" -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$W/srcapt/lists")
apt-get "${APTO[@]}" update -qq
( cd "$W/src" && apt-get "${APTO[@]}" source --download-only kubernetes >/dev/null )
SRC=$W/src/kubernetes-1.20.2
[ -d "$SRC" ] || tar -C "$W/src" -xzf "$W"/src/kubernetes_*.orig.tar.gz
# GOPATH-mode build, as upstream 1.20's hack/lib/init.sh does (GO111MODULE=off)
export GOROOT=/usr/lib/go-1.19 PATH=/usr/lib/go-1.19/bin:$PATH
export GO111MODULE=off GOPATH=$W/gp GOCACHE=$W/gocache119 GOFLAGS= GOTOOLCHAIN=local
mkdir -p "$GOPATH/src/k8s.io" && ln -sfn "$SRC" "$GOPATH/src/k8s.io/kubernetes"
rm -rf "$SRC/vendor/github.com/modern-go/reflect2"
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$SRC/vendor/github.com/modern-go/reflect2"
cd "$GOPATH/src/k8s.io/kubernetes"
# pkg/generated/openapi, from the same inputs as build/root/Makefile.generated_files (KUBE target)
if [ ! -f pkg/generated/openapi/zz_generated.openapi.go ]; then
  go build -o "$W/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
  DIRS=$(find -H . \( -not \( \( -path ./_\* -o -path ./.\* -o -path ./vendor \) -prune \) \) \
           -type f -name '*.go' | sed -e 's|^\./staging/src|vendor|' -e 's|^\./||' \
         | xargs grep --color=never -l '+k8s:openapi-gen=' \
         | grep -v -e '^vendor/k8s.io/code-generator/' -e '^vendor/k8s.io/sample-apiserver/' \
         | xargs -n1 dirname | LC_ALL=C sort -u | sed 's|^|k8s.io/kubernetes/|' | paste -sd, -)
  "$W/openapi-gen" --logtostderr -i "$DIRS" \
      -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
      -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt -r "$W/kube_violations.report"
fi
LDF="-s -w"
for V in k8s.io/kubernetes/vendor/k8s.io/component-base/version k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
  LDF="$LDF -X $V.gitVersion=v1.20.2 -X $V.gitMajor=1 -X $V.gitMinor=20 -X $V.gitTreeState=clean"
done
# build to a temporary name so an interrupted build never leaves a broken cached binary
go build -ldflags "$LDF" -o "$BIN.tmp" ./cmd/kube-apiserver
mv "$BIN.tmp" "$BIN"
echo "kube-apiserver built: $BIN"
