#!/usr/bin/env bash
# Builds the real test components from the Go module proxy into a cache outside the repo.
# Each binary lives in $CACHE/<name>-<version>/ and is reused when present, so a warm run
# costs nothing. Nothing built here is ever committed.
#
# Usage: build-binaries.sh [component ...]   (default: all)
# Components: kubernetes (kube-apiserver, kube-controller-manager, kubectl, kube-proxy), etcd,
#             dfs (the server and dfsctl, its admin CLI), helm, coredns, metallb (MetalLB's controller and its release's CRDs),
#             promtool (checks and unit-tests the chart's alert rules),
#             actionlint (checks the GitHub Actions workflows in `nox -s lint`)
set -euo pipefail

KUBERNETES_VERSION="${KUBERNETES_VERSION:-v1.35.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
DITTOFS_VERSION="${DITTOFS_VERSION:-v0.29.0}"
HELM_VERSION="${HELM_VERSION:-v3.19.5}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.15.0}"
# Not v0.16.2: the proxy refuses (403) the github.com/metallb/frr-k8s v0.0.27 it requires.
METALLB_VERSION="${METALLB_VERSION:-v0.16.1}"
# Prometheus v3.16's Go module version.
PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-v0.316.0}"
ACTIONLINT_VERSION="${ACTIONLINT_VERSION:-v1.7.12}"
CACHE="${DITTOFS_TESTBIN_CACHE:-$HOME/.cache/dittofs-operator/bin}"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
mkdir -p "$CACHE"

log() { printf '[build-binaries] %s\n' "$*" >&2; }

# Scratch wrapper modules, removed however the script ends.
SCRATCH=()
trap 'rm -rf "${SCRATCH[@]}"' EXIT

# wrapper_module DIR MODULE VERSION STAGING_VERSION
# Writes a module that requires MODULE@VERSION and pins each of its local `=> ./staging`
# replacements to the published module of the same name, so `go build` works outside its repo.
wrapper_module() {
    local dir=$1 module=$2 version=$3 staging_version=$4
    local json gomod
    # On failure `go mod download -json` reports the reason inside the JSON on stdout: show it.
    if ! json=$(go mod download -json "$module@$version"); then
        log "go mod download $module@$version failed: $(sed -n 's/.*"Error": "\(.*\)",*/\1/p' <<<"$json")"
        return 1
    fi
    gomod=$(sed -n 's/.*"GoMod": "\(.*\)",*/\1/p' <<<"$json")
    mkdir -p "$dir"
    {
        echo "module dittofs-testbin"
        echo "go 1.25.0"
        echo "require $module $version"
        # Lines like `k8s.io/api => ./staging/src/k8s.io/api` or `go.etcd.io/etcd/api/v3 => ../api`
        # become pins to the published module of the same name.
        grep -E '^\s+\S+ => \.\.?/' "$gomod" | awk -v v="$staging_version" '{print "replace " $1 " => " $1 " " v}'
    } > "$dir/go.mod"
}

build_kubernetes() {
    local out="$CACHE/kubernetes-$KUBERNETES_VERSION"
    if [[ -x $out/kube-apiserver && -x $out/kube-controller-manager && -x $out/kubectl && -x $out/kube-proxy ]]; then
        log "kubernetes $KUBERNETES_VERSION: cached in $out"; return
    fi
    local start=$SECONDS work minor
    work=$(mktemp -d) && SCRATCH+=("$work")
    minor=$(echo "$KUBERNETES_VERSION" | cut -d. -f2)
    log "kubernetes $KUBERNETES_VERSION: building kube-apiserver, kube-controller-manager, kubectl, kube-proxy"
    wrapper_module "$work" k8s.io/kubernetes "$KUBERNETES_VERSION" "v0.${KUBERNETES_VERSION#v1.}"
    local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION"
    ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
    ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION"
    (
        cd "$work"
        go get k8s.io/kubernetes/cmd/kube-apiserver@"$KUBERNETES_VERSION" \
               k8s.io/kubernetes/cmd/kube-controller-manager@"$KUBERNETES_VERSION" \
               k8s.io/kubernetes/cmd/kubectl@"$KUBERNETES_VERSION" \
               k8s.io/kubernetes/cmd/kube-proxy@"$KUBERNETES_VERSION"
        mkdir -p "$out.tmp"
        for cmd in kube-apiserver kube-controller-manager kubectl kube-proxy; do
            go build -trimpath -ldflags "$ldflags" -o "$out.tmp/$cmd" "k8s.io/kubernetes/cmd/$cmd"
        done
    )
    rm -rf "$out" && mv "$out.tmp" "$out" && rm -rf "$work"
    log "kubernetes $KUBERNETES_VERSION: built in $((SECONDS - start)) s"
}

build_etcd() {
    local out="$CACHE/etcd-$ETCD_VERSION"
    if [[ -x $out/etcd ]]; then log "etcd $ETCD_VERSION: cached in $out"; return; fi
    local start=$SECONDS work
    work=$(mktemp -d) && SCRATCH+=("$work")
    log "etcd $ETCD_VERSION: building"
    wrapper_module "$work" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "$ETCD_VERSION"
    (
        cd "$work"
        go get go.etcd.io/etcd/server/v3@"$ETCD_VERSION"
        mkdir -p "$out.tmp"
        go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3
    )
    rm -rf "$out" && mv "$out.tmp" "$out" && rm -rf "$work"
    log "etcd $ETCD_VERSION: built in $((SECONDS - start)) s"
}

# module_path FIELD MODULE@VERSION: a path `go mod download -json` gives for the module, which
# it downloads from the proxy: Dir, its source (for modules that build inside their own go.mod,
# with exactly the dependency versions their release pins), or GoMod, its go.mod.
module_path() {
    go mod download -json "$2" | sed -n "s/.*\"$1\": \"\(.*\)\",*/\1/p"
}

build_dfs() {
    local out="$CACHE/dittofs-$DITTOFS_VERSION"
    if [[ -x $out/dfs && -x $out/dfsctl ]]; then log "dfs $DITTOFS_VERSION: cached in $out"; return; fi
    local start=$SECONDS src
    log "dfs $DITTOFS_VERSION: building"
    # `go install pkg@version` asks the proxy for the module's version list, which it refuses
    # for this module; downloading the exact version and building inside it avoids the list.
    src=$(module_path Dir "github.com/marmos91/dittofs@$DITTOFS_VERSION")
    mkdir -p "$out.tmp"
    # dfsctl, its admin CLI, is what docs/snapshots.md shows and what tests run its commands with.
    (cd "$src" && go build -trimpath -ldflags "-s -w" -o "$out.tmp/" ./cmd/dfs ./cmd/dfsctl)
    rm -rf "$out" && mv "$out.tmp" "$out"
    log "dfs $DITTOFS_VERSION: built in $((SECONDS - start)) s"
}

# As helm's release Makefile builds it: the Kubernetes version `helm template` and `helm lint`
# assume without a cluster is its client-go's minor (1.34 for v3.19), not the 1.20 a plain
# `go install` leaves, so the chart's kubeVersion is judged as a downloaded helm judges it.
build_helm() {
    local out="$CACHE/helm-release-$HELM_VERSION"
    if [[ -x $out/helm ]]; then log "helm $HELM_VERSION: cached in $out"; return; fi
    local start=$SECONDS gomod minor flags=""
    log "helm $HELM_VERSION: building"
    gomod=$(module_path GoMod "helm.sh/helm/v3@$HELM_VERSION")
    minor=$(sed -n 's|^[[:space:]]*k8s.io/client-go v0\.\([0-9]*\)\..*|\1|p' "$gomod")
    [[ -n $minor ]] || { log "helm $HELM_VERSION: no k8s.io/client-go in $gomod"; exit 1; }
    for pkg in pkg/lint/rules pkg/chartutil; do
        flags+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$minor"
    done
    GOBIN="$out.tmp" go install -ldflags "$flags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    rm -rf "$out" && mv "$out.tmp" "$out"
    log "helm $HELM_VERSION: built in $((SECONDS - start)) s"
}

# The CoreDNS plugins the testbed's cluster DNS uses (dns.py writes its Corefile); the full
# set would pull in every cloud SDK CoreDNS supports and multiply the cold build time.
COREDNS_PLUGINS=(bind errors log loadbalance cache kubernetes)

build_coredns() {
    local out="$CACHE/coredns-$COREDNS_VERSION"
    if [[ -x $out/coredns ]]; then log "coredns $COREDNS_VERSION: cached in $out"; return; fi
    local start=$SECONDS work src name pkg directives="" imports=""
    work=$(mktemp -d) && SCRATCH+=("$work")
    log "coredns $COREDNS_VERSION: building with plugins ${COREDNS_PLUGINS[*]}"
    src=$(go mod download -json "github.com/coredns/coredns@$COREDNS_VERSION" \
          | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')
    # plugin.cfg lists `name:package` in execution order (CoreDNS generates its own main from
    # it): keep that order for the subset, so the chain behaves as in a stock build.
    while IFS=: read -r name pkg; do
        [[ " ${COREDNS_PLUGINS[*]} " == *" $name "* ]] || continue
        [[ $pkg == */* ]] || pkg="github.com/coredns/coredns/plugin/$pkg"
        directives+=$'\t\t'"\"$name\","$'\n'
        imports+=$'\t'"_ \"$pkg\""$'\n'
    done < <(grep -E '^[a-z0-9_]+:' "$src/plugin.cfg")
    if [[ $(grep -c . <<<"$directives") -ne ${#COREDNS_PLUGINS[@]} ]]; then
        log "coredns $COREDNS_VERSION: its plugin.cfg lacks one of: ${COREDNS_PLUGINS[*]}"
        return 1
    fi
    printf 'module dittofs-testbin-coredns\n\ngo 1.25.0\n' > "$work/go.mod"
    cat > "$work/main.go" <<EOF
// CoreDNS with only the plugins the testbed uses, in plugin.cfg's order.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

$imports)

func main() {
	if err := dnsserver.SetDirectives([]string{
$directives	}); err != nil {
		panic(err)
	}
	coremain.Run()
}
EOF
    (
        cd "$work"
        # A package, not the module: `go get` of the module's root (CoreDNS's own main, which
        # imports every plugin) would download every plugin's dependencies.
        go get "github.com/coredns/coredns/coremain@$COREDNS_VERSION"
        mkdir -p "$out.tmp"
        go build -trimpath -ldflags "-s -w" -o "$out.tmp/coredns" .
    )
    rm -rf "$out" && mv "$out.tmp" "$out" && rm -rf "$work"
    log "coredns $COREDNS_VERSION: built in $((SECONDS - start)) s"
}

build_metallb() {
    local out="$CACHE/metallb-$METALLB_VERSION"
    if [[ -x $out/metallb-controller ]]; then log "metallb $METALLB_VERSION: cached in $out"; return; fi
    local start=$SECONDS src
    log "metallb $METALLB_VERSION: building the controller"
    # Its go.mod has no replace directives, so it builds inside the downloaded module, with
    # exactly the dependency versions that release pins.
    src=$(module_path Dir "go.universe.tf/metallb@$METALLB_VERSION")
    mkdir -p "$out.tmp/crds"
    (cd "$src" && go build -trimpath -ldflags "-s -w" -o "$out.tmp/metallb-controller" ./controller)
    # The CRDs of the same release travel with the binary, so the testbed installs the ones
    # that match it without Go or the module cache at run time.
    cp "$src"/config/crd/bases/metallb.io_*.yaml "$out.tmp/crds/"
    rm -rf "$out" && mv "$out.tmp" "$out"
    log "metallb $METALLB_VERSION: built in $((SECONDS - start)) s"
}

build_promtool() {
    local out="$CACHE/promtool-$PROMETHEUS_VERSION"
    if [[ -x $out/promtool ]]; then log "promtool $PROMETHEUS_VERSION: cached in $out"; return; fi
    local start=$SECONDS src
    log "promtool $PROMETHEUS_VERSION: building"
    src=$(module_path Dir "github.com/prometheus/prometheus@$PROMETHEUS_VERSION")
    mkdir -p "$out.tmp"
    # remove_all_sd leaves out the cloud service discoveries (every cloud SDK), which rule
    # checks and rule tests never use.
    # Its go.work (for its own tools) would put the build in workspace mode.
    (cd "$src" && GOWORK=off go build -trimpath -tags remove_all_sd -ldflags "-s -w" \
        -o "$out.tmp/promtool" ./cmd/promtool)
    rm -rf "$out" && mv "$out.tmp" "$out"
    log "promtool $PROMETHEUS_VERSION: built in $((SECONDS - start)) s"
}

# As its release builds it: `actionlint -version` then names the version instead of "(devel)".
build_actionlint() {
    local out="$CACHE/actionlint-$ACTIONLINT_VERSION"
    if [[ -x $out/actionlint ]]; then log "actionlint $ACTIONLINT_VERSION: cached in $out"; return; fi
    local start=$SECONDS
    log "actionlint $ACTIONLINT_VERSION: building"
    GOBIN="$out.tmp" go install -trimpath \
        -ldflags "-s -w -X github.com/rhysd/actionlint.version=$ACTIONLINT_VERSION" \
        "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
    rm -rf "$out" && mv "$out.tmp" "$out"
    log "actionlint $ACTIONLINT_VERSION: built in $((SECONDS - start)) s"
}

components=("$@")
[[ ${#components[@]} -gt 0 ]] || components=(etcd kubernetes dfs helm coredns metallb promtool actionlint)
for component in "${components[@]}"; do
    "build_$component"
done
