#!/usr/bin/env bash
# Renders and installs every pinned chart with meshcheck's values into the control plane that
# `start.sh up DIR` started, with the helm .ci/build-go-tools built, and reports per chart:
# template time and object count, install result and time, and the pods' phases (kwok runs them).
#
#   charts.sh DIR [CHART...]    CHART: gateway-api cilium istio-base istiod istio-cni ztunnel
#                               istio-ingress kps tempo kiali-operator (default: all, this order)
#
# Env: MESHCHECK_UPSTREAM          the shared upstream folder (default ../shared/upstream beside the
#                                  repo, else /work/shared/upstream)
#      MESHCHECK_KPS_SUBCHARTS     a folder holding kube-prometheus-stack's dependency charts
#                                  (kube-state-metrics, prometheus-node-exporter, ...) when the
#                                  shared copy lacks them; whatever is still missing is dropped
#                                  from a temporary copy's Chart.yaml (said in the report)
#      MESHCHECK_HELM_TIMEOUT      helm install --timeout (default 180s)
# Writes DIR/charts/<release>.yaml (rendered), DIR/charts/<release>.{template,install}.log and
# DIR/charts/report.tsv. Exits 1 if any chart failed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
(($# >= 1)) || { echo "usage: $0 DIR [CHART...]" >&2; exit 2; }
dir=$(cd "$1" && pwd)
shift
# shellcheck disable=SC1091
. "$dir/env"
up=${MESHCHECK_UPSTREAM:-}
if [ -z "$up" ]; then
  for c in "$root/../shared/upstream" /work/shared/upstream; do [ -d "$c/charts" ] && { up=$c; break; }; done
fi
charts=$up/charts
values=$root/fixtures/values
helm=${MESHCHECK_GO_TOOLS:-$root/target/go-tools/bin}/helm
timeout=${MESHCHECK_HELM_TIMEOUT:-180s}
out=$dir/charts
mkdir -p "$out"
export KUBECONFIG HELM_CONFIG_HOME=$dir/helm/config HELM_CACHE_HOME=$dir/helm/cache HELM_DATA_HOME=$dir/helm/data
# Cilium's pods would reach the API server from inside the control plane's namespace.
api_port=${APISERVER_INTERNAL##*:}
istio="--set global.hub=registry.istio.io/release --set global.tag=1.30.3"

# gateway-api: helm applies no raw manifest, so a throwaway chart carries standard-install.yaml
# as a file that its one template prints verbatim (no templating of the CRDs' text).
gw=$dir/work/gateway-api
mkdir -p "$gw/templates" "$gw/files"
cp "$charts/gateway-api-v1.5.1/standard-install.yaml" "$gw/files/"
printf 'apiVersion: v2\nname: gateway-api\nversion: 1.5.1\n' >"$gw/Chart.yaml"
printf '{{ .Files.Get "files/standard-install.yaml" }}\n' >"$gw/templates/all.yaml"

# kube-prometheus-stack: helm refuses a chart whose dependency is missing from charts/, even one
# its condition turns off.
kps=$charts/kube-prometheus-stack-77.0.0
kps_note=""
kps_off=""
missing=$(python3 - "$kps" <<'EOF'
import os, sys, yaml
d = sys.argv[1]
deps = yaml.safe_load(open(os.path.join(d, "Chart.yaml"))).get("dependencies", [])
print(" ".join(x["name"] for x in deps if not os.path.isdir(os.path.join(d, "charts", x["name"]))))
EOF
)
if [ -n "$missing" ]; then
  rm -rf "$dir/work/kps" && mkdir -p "$dir/work" && cp -r "$kps" "$dir/work/kps" && chmod -R u+w "$dir/work/kps"
  kps=$dir/work/kps
  for m in $missing; do
    if [ -n "${MESHCHECK_KPS_SUBCHARTS:-}" ] && [ -d "$MESHCHECK_KPS_SUBCHARTS/$m" ]; then
      cp -r "$MESHCHECK_KPS_SUBCHARTS/$m" "$kps/charts/"
    fi
  done
  dropped=$(python3 - "$kps" <<'EOF'
import os, sys, yaml
d = sys.argv[1]
p = os.path.join(d, "Chart.yaml")
c = yaml.safe_load(open(p))
gone = [x["name"] for x in c.get("dependencies", []) if not os.path.isdir(os.path.join(d, "charts", x["name"]))]
conditions = [x["condition"] for x in c["dependencies"] if x["name"] in gone and x.get("condition")]
c["dependencies"] = [x for x in c["dependencies"] if x["name"] not in gone]
yaml.safe_dump(c, open(p, "w"), sort_keys=False)
print(" ".join(gone))
# The parent's templates read a subchart's values while its condition is on: off with it.
open(os.path.join(d, ".conditions-off"), "w").write(" ".join(f"--set {x}=false" for x in conditions))
EOF
)
  kps_off=$(cat "$kps/.conditions-off")
  kps_note="shared copy lacks: $missing; dropped from a temporary Chart.yaml: ${dropped:-none}"
  echo "kps: $kps_note"
fi

# release  namespace  chart  helm args (values as meshcheck passes them)
table=(
  "gateway-api    default        $gw"
  "cilium         kube-system    $charts/cilium-1.19.6.tgz -f $values/cilium.yaml --set k8sServiceHost=127.0.0.1 --set k8sServicePort=$api_port"
  "istio-base     istio-system   $charts/istio-1.30.3/base -f $values/istio-base.yaml $istio"
  "istiod         istio-system   $charts/istio-1.30.3/istiod -f $values/istiod.yaml $istio"
  "istio-cni      istio-system   $charts/istio-1.30.3/cni -f $values/istio-cni.yaml $istio"
  "ztunnel        istio-system   $charts/istio-1.30.3/ztunnel -f $values/ztunnel.yaml --set hub=registry.istio.io/release --set tag=1.30.3"
  "istio-ingress  istio-ingress  $charts/istio-1.30.3/gateway -f $values/istio-gateway.yaml $istio"
  "kps            monitoring     $kps -f $values/kube-prometheus-stack.yaml $kps_off"
  "tempo          tempo          $charts/tempo-1.26.1 -f $values/tempo.yaml"
  "kiali-operator kiali-operator $charts/kiali-operator-2.29.0.tgz -f $values/kiali-operator.yaml"
)
want=" $* "
elapsed() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }'; }
printf 'release\ttemplate\tobjects\ttemplate_s\tinstall\tinstall_s\tnote\n' >"$out/report.tsv"
failed=0
for line in "${table[@]}"; do
  read -r rel ns chart args <<<"$line"
  [ "$want" = "  " ] || [[ $want == *" $rel "* ]] || continue
  t=$(date +%s.%N)
  tres=ok
  # shellcheck disable=SC2086 # $chart and $args are word lists on purpose
  "$helm" template "$rel" $chart -n "$ns" --kube-version 1.35.4 $args >"$out/$rel.yaml" 2>"$out/$rel.template.log" || tres=FAIL
  tt=$(elapsed "$t")
  objs=$(grep -c '^kind:' "$out/$rel.yaml" || true)
  t=$(date +%s.%N)
  ires=ok
  # shellcheck disable=SC2086
  "$helm" install "$rel" $chart -n "$ns" --create-namespace --wait --timeout "$timeout" $args \
    >"$out/$rel.install.log" 2>&1 || ires=FAIL
  it=$(elapsed "$t")
  note=""
  [ "$ires" = ok ] || { note=$(grep -m1 -i 'error' "$out/$rel.install.log" | cut -c1-300); failed=1; }
  [ "$rel" != kps ] || [ -z "$kps_note" ] || note="${note:+$note; }$kps_note"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$rel" "$tres" "$objs" "$tt" "$ires" "$it" "$note" | tee -a "$out/report.tsv"
done

# Pods and their phases, per namespace, as the API server has them.
curl -fsS --cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" --key "$dir/pki/admin.key" \
  "$APISERVER/api/v1/pods" | python3 -c '
import json, sys, collections
items = json.load(sys.stdin)["items"]
by = collections.defaultdict(collections.Counter)
for p in items:
    by[p["metadata"]["namespace"]][p["status"].get("phase", "?")] += 1
for ns in sorted(by):
    print("pods", ns, dict(by[ns]))
' | tee "$out/pods.txt"
exit $failed
