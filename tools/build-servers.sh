#!/usr/bin/env bash
# Build the real servers the test bed runs (etcd, etcdctl, toxiproxy) and the
# benchmarks' Go clientv3 baseline from the
# Go module proxy, pinned by the wrapper modules beside this script, into a cache
# outside the repository keyed by version. Idempotent: a cached binary is kept.
#
#   tools/build-servers.sh            # build what is missing, print the bin dir
#   tools/build-servers.sh etcd toxiproxy   # only these (etcd, etcdctl, toxiproxy, clientv3-driver,
#                                           # kube-apiserver, porcupine-checker): `make demo` needs
#                                           # only etcd and toxiproxy
#   tools/build-servers.sh --print    # print the bin dir, build nothing
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${RESILIENT_ETCD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/resilient-etcd}

# version of a module required by a wrapper's go.mod
pinned() { awk -v m="$2" '$1 == m || ($1 == "require" && $2 == m) { print ($1 == m ? $2 : $3); exit }' "$here/$1/go.mod"; }

etcd_v=$(pinned etcd go.etcd.io/etcd/server/v3)
etcdctl_v=$(pinned etcdctl go.etcd.io/etcd/etcdctl/v3)
toxi_v=$(pinned toxiproxy github.com/Shopify/toxiproxy/v2)
kube_v=$(pinned kube-apiserver k8s.io/kubernetes)
# the benchmark's Go baseline: keyed by client version and by its own source
drv_v="$(pinned clientv3-driver go.etcd.io/etcd/client/v3)-$(cat "$here/clientv3-driver/main.go" "$here/clientv3-driver/go.sum" | sha256sum | cut -c1-8)"
# the robustness checker: keyed by porcupine's version and by its own source
pc_v="$(pinned porcupine-checker github.com/anishathalye/porcupine)-$(cat "$here/porcupine-checker/main.go" "$here/porcupine-checker/go.sum" | sha256sum | cut -c1-8)"
bindir="$cache/bin"

if [[ "${1:-}" == "--print" ]]; then echo "$bindir"; exit 0; fi

if ! command -v go >/dev/null 2>&1; then
  echo "build-servers: Go is not installed (needed to build etcd $etcd_v and toxiproxy $toxi_v); install Go >= 1.24" >&2
  exit 2
fi

wanted=("$@")
known=" etcd etcdctl toxiproxy clientv3-driver kube-apiserver porcupine-checker "
for w in "${wanted[@]}"; do
  [[ "$known" == *" $w "* ]] || { echo "build-servers: unknown server '$w' (one of:$known)" >&2; exit 2; }
done
want() { [[ ${#wanted[@]} -eq 0 || " ${wanted[*]} " == *" $1 "* ]]; }

mkdir -p "$bindir"
build() { # name version wrapper-dir package
  local out="$bindir/$1-$2"
  if [[ -x "$out" ]]; then return 0; fi
  echo "build-servers: building $1 $2 ..." >&2
  local start=$SECONDS
  (cd "$here/$3" && CGO_ENABLED=0 go build -trimpath -o "$out.tmp" "$4")
  mv "$out.tmp" "$out"
  echo "build-servers: built $1 $2 in $((SECONDS - start)) s" >&2
}

# each built binary gets a stable name for the harness; the versioned files are the cache
if want etcd; then build etcd "$etcd_v" etcd . && ln -sf "etcd-$etcd_v" "$bindir/etcd"; fi
if want etcdctl; then build etcdctl "$etcdctl_v" etcdctl . && ln -sf "etcdctl-$etcdctl_v" "$bindir/etcdctl"; fi
if want toxiproxy; then
  build toxiproxy-server "$toxi_v" toxiproxy github.com/Shopify/toxiproxy/v2/cmd/server
  build toxiproxy-cli "$toxi_v" toxiproxy github.com/Shopify/toxiproxy/v2/cmd/cli
  ln -sf "toxiproxy-server-$toxi_v" "$bindir/toxiproxy-server"
  ln -sf "toxiproxy-cli-$toxi_v" "$bindir/toxiproxy-cli"
fi
if want clientv3-driver; then
  build clientv3-driver "$drv_v" clientv3-driver . && ln -sf "clientv3-driver-$drv_v" "$bindir/clientv3-driver"
fi
if want porcupine-checker; then
  build porcupine-checker "$pc_v" porcupine-checker . && ln -sf "porcupine-checker-$pc_v" "$bindir/porcupine-checker"
fi
if want kube-apiserver; then
  build kube-apiserver "$kube_v" kube-apiserver . && ln -sf "kube-apiserver-$kube_v" "$bindir/kube-apiserver"
fi
echo "$bindir"
