#!/bin/sh
# Secrets for docker-compose.secure.yml: a private CA, TLS certificates for Kafka (as a PKCS12
# keystore) and Redis, Redis's ACL file, and random passwords and the /metrics token in .env.
# Usage: deploy/make-secrets.sh [DIR]   (DIR: where the compose file is; default: here)
set -eu
dir=${1:-.}
out="$dir/secrets"
mkdir -p "$out/kafka" "$out/redis"
chmod 700 "$out"
rand() { openssl rand -hex 24; }
kafka_password=$(rand); redis_password=$(rand); admin_password=$(rand); keystore_password=$(rand)

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
  -subj "/CN=streamrec CA" -keyout "$out/ca.key" -out "$out/ca.crt" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
  2>/dev/null

# A server certificate for the compose service name (clients check it) and localhost.
server_cert() {
  name=$1
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$name" \
    -keyout "$out/$name/$name.key" -out "$out/$name/$name.csr" 2>/dev/null
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1\n' \
    "$name" > "$out/$name/$name.ext"
  openssl x509 -req -in "$out/$name/$name.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
    -CAcreateserial -days 825 -extfile "$out/$name/$name.ext" -out "$out/$name/$name.crt" \
    2>/dev/null
  rm "$out/$name/$name.csr" "$out/$name/$name.ext"
  cp "$out/ca.crt" "$out/$name/ca.crt"
}
server_cert kafka
server_cert redis

openssl pkcs12 -export -in "$out/kafka/kafka.crt" -inkey "$out/kafka/kafka.key" \
  -certfile "$out/ca.crt" -name kafka -passout "pass:$keystore_password" \
  -out "$out/kafka/kafka.p12"
printf '%s' "$keystore_password" > "$out/kafka/kafka.creds"
rm "$out/kafka/kafka.key" "$out/kafka/kafka.crt"  # in the keystore now

# The worker's user may touch only its app's keys (STREAMREC_APP_ID streamrec) and run no
# administrative command (FLUSHALL, CONFIG, DEBUG, KEYS...).
printf 'user default off\nuser streamrec on >%s ~streamrec:* +@all -@dangerous\n' \
  "$redis_password" > "$out/redis/users.acl"

cat > "$dir/.env" <<ENV
STREAMREC_KAFKA_PASSWORD=$kafka_password
STREAMREC_REDIS_PASSWORD=$redis_password
KAFKA_ADMIN_PASSWORD=$admin_password
STREAMREC_WEB_TOKEN=$(openssl rand -hex 32)
ENV
chmod 600 "$dir/.env"
# The containers run as their own users (Kafka's appuser, redis): they must read these.
chmod 644 "$out"/kafka/* "$out"/redis/* "$out/ca.crt"
echo "secrets in $out, passwords and the /metrics token in $dir/.env"
