# Sourced by the benchmarks that need etcd (dhcp.sh's slipway-etcd, failover.sh).
#
# etcd_pki DIR IP: a CA and, signed by it, a server certificate for IP (serverAuth and
# clientAuth: etcd's gateway calls its own port with it) and a client certificate, in DIR
# (ca.pem, server.pem/.key, client.pem/.key).
etcd_pki() {
  local dir=$1 ip=$2 who ext
  mkdir -p "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
  for who in server client; do
    ext="extendedKeyUsage=clientAuth"
    [[ $who == server ]] && ext="subjectAltName=IP:$ip
extendedKeyUsage=serverAuth,clientAuth"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$who" \
      -keyout "$dir/$who.key" -out "$dir/$who.csr" 2>/dev/null
    openssl x509 -req -in "$dir/$who.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -days 2 \
      -extfile <(echo "$ext") -out "$dir/$who.pem" 2>/dev/null
  done
}

# etcd_trio NS IP DIR [CORE]: three members in namespace NS on IP (client ports 2379, 12379,
# 22379), TLS with client certificates from DIR (etcd_pki), data and logs under DIR, pinned to
# CORE if given. Appends the members' PIDs to the array etcd_pids.
etcd_trio() {
  local ns=$1 ip=$2 dir=$3 core=${4:-} m c p
  local initial="m0=https://$ip:2380,m1=https://$ip:12380,m2=https://$ip:22380"
  local pin=()
  [[ -n "$core" ]] && pin=(taskset -c "$core")
  for m in 0 1 2; do
    c=$((2379 + m * 10000)) p=$((2380 + m * 10000))
    ip netns exec "$ns" "${pin[@]}" etcd --name "m$m" --data-dir "$dir/m$m" \
      --listen-client-urls "https://$ip:$c" --advertise-client-urls "https://$ip:$c" \
      --listen-peer-urls "https://$ip:$p" --initial-advertise-peer-urls "https://$ip:$p" \
      --initial-cluster "$initial" --initial-cluster-state new --initial-cluster-token bench \
      --client-cert-auth --trusted-ca-file "$dir/ca.pem" --cert-file "$dir/server.pem" --key-file "$dir/server.key" \
      --peer-client-cert-auth --peer-trusted-ca-file "$dir/ca.pem" --peer-cert-file "$dir/server.pem" \
      --peer-key-file "$dir/server.key" --log-level error >"$dir/m$m.log" 2>&1 &
    etcd_pids+=($!)
  done
}

# The [store] section for a trio on IP with the certificates in DIR, for instance NAME.
etcd_store_toml() {
  local ip=$1 dir=$2 name=$3
  printf '[store]\nbackend = "etcd"\ninstance = "%s"\n' "$name"
  printf 'endpoints = ["https://%s:2379", "https://%s:12379", "https://%s:22379"]\n' "$ip" "$ip" "$ip"
  printf 'ca = "%s/ca.pem"\ncert = "%s/client.pem"\nkey = "%s/client.key"\n' "$dir" "$dir" "$dir"
}
