#!/usr/bin/env bash
# Starts etcd and kube-apiserver (built by build-apiserver.sh) on 127.0.0.1 only, with RBAC and static bearer
# tokens, and writes one kubeconfig per user into $D:
#   admin.kubeconfig     user "inferno-admin" in system:masters (everything)
#   operator.kubeconfig  user "inferno-operator" (only what a RoleBinding grants it)
#   nobody.kubeconfig    user "inferno-nobody" (nothing)
# Env: D (state folder, required), ETCD_PORT (23790), API_PORT (16443), INFERNO_KUBE_CACHE.
# Stop: kill "$(cat "$D/apiserver.pid")" "$(cat "$D/etcd.pid")"
set -euo pipefail
W=${INFERNO_KUBE_CACHE:-/var/cache/inferno-mip-kube}
D=${D:?set D to a state folder}; ETCD_PORT=${ETCD_PORT:-23790}; API_PORT=${API_PORT:-16443}
BIN=$W/bin/kube-apiserver
[ -x "$BIN" ] || { echo "no $BIN: run .ci/kube/build-apiserver.sh first" >&2; exit 3; }
mkdir -p "$D"
if [ ! -f "$D/apiserver.crt" ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=kube-apiserver \
    -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" -keyout "$D/apiserver.key" -out "$D/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$D/sa.key" 2048 2>/dev/null            # service-account key pair: required since 1.20
  openssl rsa -in "$D/sa.key" -pubout -out "$D/sa.pub" 2>/dev/null
  cat > "$D/tokens.csv" <<TOKENS
admin-token,inferno-admin,1,"system:masters"
operator-token,inferno-operator,2
nobody-token,inferno-nobody,3
TOKENS
fi
if [ ! -f "$D/etcd.pid" ] || ! kill -0 "$(cat "$D/etcd.pid")" 2>/dev/null; then
  etcd --name inferno-test --data-dir "$D/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT+1))" --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT+1))" \
    --initial-cluster "inferno-test=http://127.0.0.1:$((ETCD_PORT+1))" > "$D/etcd.log" 2>&1 &
  echo $! > "$D/etcd.pid"
fi
"$BIN" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" --insecure-port 0 \
  --tls-cert-file "$D/apiserver.crt" --tls-private-key-file "$D/apiserver.key" \
  --token-auth-file "$D/tokens.csv" --authorization-mode RBAC \
  --service-account-key-file "$D/sa.pub" --service-account-signing-key-file "$D/sa.key" \
  --service-account-issuer https://kubernetes.default.svc \
  --service-cluster-ip-range 10.96.0.0/24 --endpoint-reconciler-type none \
  --enable-priority-and-fairness=false \
  --cert-dir "$D" > "$D/apiserver.log" 2>&1 &
echo $! > "$D/apiserver.pid"
for user in admin operator nobody; do
  cat > "$D/$user.kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: "https://127.0.0.1:$API_PORT", certificate-authority: "$D/apiserver.crt"}
users:
- name: $user
  user: {token: $user-token}
contexts:
- name: local
  context: {cluster: local, user: $user}
current-context: local
KUBECONFIG
done
START=$SECONDS
for i in $(seq 1 600); do
  if curl -sf -m 2 --cacert "$D/apiserver.crt" -H "Authorization: Bearer admin-token" \
       "https://127.0.0.1:$API_PORT/readyz" >/dev/null 2>&1; then
    echo "kube-apiserver ready on 127.0.0.1:$API_PORT after $((SECONDS - START))s"; exit 0
  fi
  kill -0 "$(cat "$D/apiserver.pid")" 2>/dev/null || break
  sleep 0.2
done
echo "kube-apiserver NOT ready" >&2; tail -30 "$D/apiserver.log" >&2; exit 1
