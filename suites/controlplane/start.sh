#!/usr/bin/env bash
# A minimal real Kubernetes control plane for the rehearsals (issue 21): etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kwok (fake nodes; pods go Pending -> Running by
# kwok's default "fast" stages), all built by .ci/build-go-tools.
#
#   start.sh up DIR     start everything, wait until ready, write DIR/env, exit 0 (daemons stay)
#   start.sh down DIR   stop what `up DIR` started (by the pids it recorded) and delete its netns
#
# Network: everything runs in a network namespace of its own (`ip netns add`, only `lo` up), and
# binds 127.0.0.1 on random ports. The API server dials webhooks, service proxies and "kubelets"
# at cluster and pod addresses (10.96.0.0/16, 10.0.0.0/24 here) that exist nowhere: inside the
# namespace those dials fail at once ("network is unreachable") and no packet leaves the machine.
# Clients stay in the caller's namespace: forward.py listens on 127.0.0.1 there and connects them
# to the API server and etcd inside (DIR/kubeconfig, APISERVER and ETCD in DIR/env); the daemons
# use DIR/kubeconfig.internal. MESHCHECK_CP_NETNS=- runs everything in the caller's namespace
# instead (only inside one you made yourself).
# Root is needed (ip netns, setns). Run by sudo, `up` gives the client's files (kubeconfig, pki,
# env) to the calling user ($SUDO_UID), and `down` gives the whole folder back.
#
# Env: MESHCHECK_GO_TOOLS           binaries (default target/go-tools/bin)
#      MESHCHECK_CP_NODES           fake nodes (default 1)
#      MESHCHECK_ETCD_COMPACTION    kube-apiserver --etcd-compaction-interval (default 5m)
#      MESHCHECK_CP_READY_TIMEOUT   seconds to wait for readiness (default 120)
#      MESHCHECK_CP_APISERVER_FLAGS extra kube-apiserver flags, space-separated (a test's fault, e.g.
#                                   --watch-cache-sizes=configmaps#0)
#      MESHCHECK_KWOK_POD_DELETE    the kwok Stage that deletes pods (default: kwok's fast one, at
#                                   once; a test's may wait out the grace period, as a kubelet does)
#      MESHCHECK_KWOK_CONFIG        more kwok configuration files, colon-separated, appended to the
#                                   stages: a test's ClusterLogs (what `kubectl logs` reads) or
#                                   kwok's chaos stages (a container terminated OOMKilled)
#      MESHCHECK_KUBELET_SOCKET     a Unix socket where the simulation answers what runs in the pods:
#                                   the nodes' kubelet API (exec, port-forward, logs) is then
#                                   kubelet-streams asking it, instead of kwok's own server
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

usage() { echo "usage: $0 up|down DIR" >&2; exit 2; }
(($# == 2)) || usage
cmd=$1
dir=$2

stop() {
  local d=$1
  [ -f "$d/pids" ] || return 0
  local pid pids
  mapfile -t pids <"$d/pids"
  # Reverse start order: kwok and the controllers first, etcd last.
  for pid in $(tac "$d/pids"); do kill "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.2
  done
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for _ in $(seq 25); do
    local left=0
    for pid in "${pids[@]}"; do [ -d "/proc/$pid" ] && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] && left=1; done
    ((left)) || break
    sleep 0.2
  done
  rm -f "$d/pids"
  if [ -f "$d/netns" ]; then ip netns delete "$(cat "$d/netns")" 2>/dev/null || true; rm -f "$d/netns"; fi
  if [ -n "${SUDO_UID:-}" ]; then chown -R "$SUDO_UID:${SUDO_GID:-$SUDO_UID}" "$d"; fi
}

case $cmd in
  down) stop "$dir"; exit 0 ;;
  up) ;;
  *) usage ;;
esac

bin=${MESHCHECK_GO_TOOLS:-$root/target/go-tools/bin}
bin=$(cd "$bin" && pwd)
for b in etcd kube-apiserver kube-controller-manager kube-scheduler kwok; do
  [ -x "$bin/$b" ] || { echo "start.sh: $bin/$b missing: run .ci/build-go-tools" >&2; exit 1; }
done
nodes=${MESHCHECK_CP_NODES:-1}
compaction=${MESHCHECK_ETCD_COMPACTION:-5m}
ready_timeout=${MESHCHECK_CP_READY_TIMEOUT:-120}
read -r -a apiserver_flags <<<"${MESHCHECK_CP_APISERVER_FLAGS:-}"

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
[ ! -f "$dir/pids" ] || { echo "start.sh: $dir/pids exists: run '$0 down $dir' first" >&2; exit 1; }
mkdir -p "$dir/pki" "$dir/logs" "$dir/etcd-data"
: >"$dir/pids"
trap 'rc=$?; if ((rc)); then echo "start.sh: failed; logs in $dir/logs" >&2; stop "$dir"; fi' EXIT

# --- network namespace -----------------------------------------------------------------------
ns=${MESHCHECK_CP_NETNS:-meshcheck-cp-$$}
inns=()
if [ "$ns" != - ]; then
  ip netns add "$ns"
  echo "$ns" >"$dir/netns"
  ip netns exec "$ns" ip link set lo up
  inns=(ip netns exec "$ns")
fi
run() { "${inns[@]}" "$@"; }

# --- ports: free 127.0.0.1 ports inside the namespace ---------------------------------------
read -r p_etcd p_peer p_api p_kcm p_sched p_kwok p_kubelet < <(run python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(7)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
EOF
)

# --- PKI ---------------------------------------------------------------------------------------
pki=$dir/pki
(
  cd "$pki"
  ossl() { openssl "$@" 2>/dev/null; }
  ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
    -keyout ca.key -out ca.crt -subj /CN=meshcheck-controlplane-ca
  sans="IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default"
  sans+=",DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  ossl req -x509 -CA ca.crt -CAkey ca.key -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -days 7 -keyout serving.key -out serving.crt -subj /CN=kube-apiserver \
    -addext "subjectAltName=$sans" -addext "extendedKeyUsage=serverAuth" \
    -addext "basicConstraints=critical,CA:FALSE"
  ossl req -x509 -CA ca.crt -CAkey ca.key -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -days 7 -keyout admin.key -out admin.crt -subj "/O=system:masters/CN=meshcheck-admin" \
    -addext "extendedKeyUsage=clientAuth" -addext "basicConstraints=critical,CA:FALSE"
  ossl genrsa -out sa.key 2048
  ossl rsa -in sa.key -pubout -out sa.pub
)
api=https://127.0.0.1:$p_api
write_kubeconfig() { # path, server
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: meshcheck-cp
  cluster:
    server: $2
    certificate-authority: $pki/ca.crt
users:
- name: meshcheck-admin
  user:
    client-certificate: $pki/admin.crt
    client-key: $pki/admin.key
contexts:
- name: meshcheck-cp
  context: {cluster: meshcheck-cp, user: meshcheck-admin}
current-context: meshcheck-cp
EOF
  chmod 600 "$1"
}
# The daemons' (inside the namespace); the clients' is written once the forwarder listens.
kubeconfig=$dir/kubeconfig.internal
write_kubeconfig "$kubeconfig" "$api"

# --- daemons -----------------------------------------------------------------------------------
start() { # name, argv...
  local name=$1
  shift
  # A simple command, not a function, so that $! is the daemon itself (ip netns exec and setsid
  # both exec) and `down` can kill it by pid.
  "${inns[@]}" setsid "$@" >"$dir/logs/$name.log" 2>&1 </dev/null &
  echo $! >>"$dir/pids"
}
curl_api() { run curl -fsS --max-time 5 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "$@"; }
wait_for() { # what, command...
  local what=$1 t0=$SECONDS
  shift
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS - t0 > ready_timeout)); then echo "start.sh: $what not ready in ${ready_timeout}s" >&2; return 1; fi
    sleep 0.2
  done
}
now() { date +%s.%N; }
since() { awk -v s="$1" -v e="$(now)" 'BEGIN { printf "%.1f", e - s }'; }

t_all=$(now)
start etcd "$bin/etcd" --name meshcheck --data-dir "$dir/etcd-data" \
  --listen-client-urls "http://127.0.0.1:$p_etcd" --advertise-client-urls "http://127.0.0.1:$p_etcd" \
  --listen-peer-urls "http://127.0.0.1:$p_peer" --initial-advertise-peer-urls "http://127.0.0.1:$p_peer" \
  --initial-cluster "meshcheck=http://127.0.0.1:$p_peer" --unsafe-no-fsync --log-level warn
wait_for etcd run curl -fsS --max-time 2 "http://127.0.0.1:$p_etcd/health"
t_etcd=$(since "$t_all")

t=$(now)
start kube-apiserver "$bin/kube-apiserver" \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$p_api" \
  --etcd-servers="http://127.0.0.1:$p_etcd" --etcd-compaction-interval="$compaction" \
  --tls-cert-file="$pki/serving.crt" --tls-private-key-file="$pki/serving.key" \
  --client-ca-file="$pki/ca.crt" \
  --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-cluster-ip-range=10.96.0.0/16 --endpoint-reconciler-type=none \
  --authorization-mode=RBAC --allow-privileged=true \
  --kubelet-client-certificate="$pki/admin.crt" --kubelet-client-key="$pki/admin.key" \
  --kubelet-preferred-address-types=InternalIP --profiling=false ${apiserver_flags[@]+"${apiserver_flags[@]}"}
wait_for kube-apiserver curl_api "$api/readyz"
t_api=$(since "$t")

t=$(now)
start kube-controller-manager "$bin/kube-controller-manager" \
  --kubeconfig="$kubeconfig" --authentication-kubeconfig="$kubeconfig" \
  --authorization-kubeconfig="$kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$p_kcm" --leader-elect=false \
  --use-service-account-credentials=true --service-account-private-key-file="$pki/sa.key" \
  --root-ca-file="$pki/ca.crt" --cluster-signing-cert-file="$pki/ca.crt" \
  --cluster-signing-key-file="$pki/ca.key" --service-cluster-ip-range=10.96.0.0/16 \
  --profiling=false
start kube-scheduler "$bin/kube-scheduler" \
  --kubeconfig="$kubeconfig" --authentication-kubeconfig="$kubeconfig" \
  --authorization-kubeconfig="$kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$p_sched" --leader-elect=false --profiling=false

# kwok: the node stages (initialize, heartbeat with a lease) and pod stages (ready, complete,
# delete) kwokctl uses by default, taken from the pinned module (the `kwok` binary has none built
# in): sigs.k8s.io/kwok/kustomize/stage, which .ci/build-go-tools copies beside the binary.
stages=${MESHCHECK_KWOK_STAGES:-$bin/kwok-stages}
[ -d "$stages" ] || { echo "start.sh: $stages missing: run .ci/build-go-tools kwok" >&2; exit 1; }
{
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml; do
    echo ---
    cat "$stages/$f"
  done
  echo ---
  cat "${MESHCHECK_KWOK_POD_DELETE:-$stages/pod/fast/pod-delete.yaml}"
  IFS=: read -r -a extra <<<"${MESHCHECK_KWOK_CONFIG:-}"
  for f in ${extra[@]+"${extra[@]}"}; do
    echo ---
    cat "$f"
  done
} >"$dir/kwok.yaml"
# The nodes' kubelet API (what the API server dials for pods/exec, portforward and log): kwok's
# own server, or kubelet-streams in front of the simulation.
node_port=$p_kwok
if [ -n "${MESHCHECK_KUBELET_SOCKET:-}" ]; then
  [ -x "$bin/kubelet-streams" ] || { echo "start.sh: $bin/kubelet-streams missing: run .ci/build-go-tools" >&2; exit 1; }
  # The pod and Service addresses are this namespace's own (AnyIP: `local` routes), so that
  # what the API server dials there (the service proxy's endpoints) reaches kubelet-streams,
  # which listens on every port the simulation's pods declare and passes each connection on.
  # Only inside the namespace: in the caller's, listening on every address would open the pods'
  # ports to the machine's network.
  pod_network=()
  if ((${#inns[@]})); then
    run ip route add local 10.0.0.0/24 dev lo
    run ip route add local 10.96.0.0/16 dev lo
    pod_network=(-pod-network)
  fi
  start kubelet-streams "$bin/kubelet-streams" -listen "127.0.0.1:$p_kubelet" -cert "$pki/serving.crt" \
    -key "$pki/serving.key" -socket "$MESHCHECK_KUBELET_SOCKET" ${pod_network[@]+"${pod_network[@]}"}
  wait_for kubelet-streams run curl -fsSk --max-time 2 "https://127.0.0.1:$p_kubelet/healthz"
  node_port=$p_kubelet
fi
start kwok "$bin/kwok" --kubeconfig="$kubeconfig" --config="$dir/kwok.yaml" --manage-all-nodes=true \
  --node-ip=127.0.0.1 --node-port="$node_port" --server-address="127.0.0.1:$p_kwok" \
  --tls-cert-file="$pki/serving.crt" --tls-private-key-file="$pki/serving.key" \
  --node-lease-duration-seconds=40 --cidr=10.0.0.0/24

for i in $(seq 0 $((nodes - 1))); do
  curl_api -X POST -H 'Content-Type: application/yaml' "$api/api/v1/nodes" --data-binary @- >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
  labels:
    type: kwok
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    node-role.kubernetes.io/worker: ""
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110"}
EOF
done
node_ready() {
  local n
  for i in $(seq 0 $((nodes - 1))); do
    n=$(curl_api "$api/api/v1/nodes/kwok-node-$i") || return 1
    python3 -c 'import json,sys; c={x["type"]:x["status"] for x in json.load(sys.stdin)["status"].get("conditions",[])}; sys.exit(c.get("Ready")!="True")' <<<"$n" || return 1
  done
}
wait_for "kwok nodes" node_ready
# The controller manager's token and service-account controllers: namespace "default" gets its SA.
wait_for "default service account" curl_api "$api/api/v1/namespaces/default/serviceaccounts/default"
run curl -fsS -k --max-time 5 "https://127.0.0.1:$p_kcm/healthz" >/dev/null
run curl -fsS -k --max-time 5 "https://127.0.0.1:$p_sched/healthz" >/dev/null

# The clients' door (forward.py): in the caller's namespace, to the API server and etcd inside.
if ((${#inns[@]})); then
  setsid python3 "$here/forward.py" "/run/netns/$ns" "$p_api" "$p_etcd" \
    >"$dir/forward.ports" 2>"$dir/logs/forward.log" </dev/null &
  echo $! >>"$dir/pids"
  wait_for forward.py test -s "$dir/forward.ports"
  read -r h_api h_etcd <"$dir/forward.ports"
else
  h_api=$p_api h_etcd=$p_etcd
fi
write_kubeconfig "$dir/kubeconfig" "https://127.0.0.1:$h_api"

cat >"$dir/env" <<EOF
KUBECONFIG=$dir/kubeconfig
NETNS=${ns/#-/}
APISERVER=https://127.0.0.1:$h_api
ETCD=http://127.0.0.1:$h_etcd
APISERVER_INTERNAL=$api
ETCD_INTERNAL=http://127.0.0.1:$p_etcd
KCM_PORT=$p_kcm
SCHEDULER_PORT=$p_sched
KWOK_PORT=$p_kwok
ETCD_READY_S=$t_etcd
APISERVER_READY_S=$t_api
ALL_READY_S=$(since "$t_all")
EOF
if [ -n "${SUDO_UID:-}" ]; then chown -R "$SUDO_UID:${SUDO_GID:-$SUDO_UID}" "$dir/kubeconfig" "$dir/pki" "$dir/env"; fi
trap - EXIT
cat "$dir/env"
