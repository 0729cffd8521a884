#!/usr/bin/env bash
# Scans medhub's HTTPS listener with sslyze (PyPI, pinned to 6.3.x, in a venv) and fails unless
#   1. by default only TLS 1.3 is accepted (SSL 2/3, TLS 1.0/1.1/1.2 all refused), and
#   2. with tls.allow_tls12, TLS 1.2 offers only ECDHE suites with AES-GCM or ChaCha20-Poly1305
#      (scanned with an ECDSA and with an RSA certificate),
# and in every run: no TLS compression, no insecure renegotiation, no 0-RTT early data, and
# Heartbleed, CCS injection and ROBOT negative. It prints a short summary.
#
# Certificates are made here with the openssl CLI (self-signed, basicConstraints=critical,
# CA:FALSE); the Mozilla profile check is off because they are not publicly trusted.
#
# Environment: MEDHUB_BIN (a built medhub; otherwise `cargo build -p medhub`), CARGO_TARGET_DIR,
# MEDHUB_SSLYZE_VENV (default /var/tmp/medhub-sslyze-venv).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${MEDHUB_SSLYZE_VENV:-/var/tmp/medhub-sslyze-venv}"
SSLYZE_PIN='sslyze==6.3.*'

if ! "$VENV/bin/sslyze" --help 2>/dev/null | grep -q 'SSLyze version 6\.3\.'; then
  echo "tls-scan: installing $SSLYZE_PIN in $VENV"
  python3 -m venv --clear "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$SSLYZE_PIN"
fi

if [ -z "${MEDHUB_BIN:-}" ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/medhub-target}"
  cargo build --quiet --locked -p medhub
  MEDHUB_BIN="$CARGO_TARGET_DIR/debug/medhub"
fi

WORK="$(mktemp -d /tmp/medhub-tls-scan.XXXXXX)"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# A self-signed server certificate for localhost and 127.0.0.1 with a fresh key of KIND.
make_cert() {
  local kind="$1"
  local key_args
  case "$kind" in
    ecdsa) key_args=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
    rsa) key_args=(-newkey rsa:2048) ;;
  esac
  openssl req -x509 "${key_args[@]}" -nodes -days 2 -subj "/CN=localhost" \
    -keyout "$WORK/$kind-key.pem" -out "$WORK/$kind-cert.pem" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -addext "basicConstraints=critical,CA:FALSE" \
    -addext "keyUsage=critical,digitalSignature,keyEncipherment" \
    -addext "extendedKeyUsage=serverAuth" 2>/dev/null
  chmod 600 "$WORK/$kind-key.pem"
}

# Starts medhub with the KIND certificate; ALLOW_TLS12 is true or false. Sets ADDR.
start_medhub() {
  local kind="$1" allow_tls12="$2"
  rm -rf "$WORK/data" "$WORK/medhub.out"
  MEDHUB__TLS__ALLOW_TLS12="$allow_tls12" RUST_LOG=warn "$MEDHUB_BIN" serve \
    --listen 127.0.0.1:0 --data-dir "$WORK/data" \
    --tls-cert "$WORK/$kind-cert.pem" --tls-key "$WORK/$kind-key.pem" \
    >"$WORK/medhub.out" 2>"$WORK/medhub.err" &
  SERVER_PID=$!
  ADDR=""
  for _ in $(seq 1 600); do
    ADDR="$(sed -n 's|^medhub: listening on https://||p' "$WORK/medhub.out")"
    [ -n "$ADDR" ] && return 0
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "tls-scan: medhub did not start:" >&2
  cat "$WORK/medhub.err" >&2
  exit 1
}

stop_medhub() {
  kill "$SERVER_PID"
  wait "$SERVER_PID" || true
  SERVER_PID=""
}

# Scans ADDR and checks the report; EXPECT is tls13-only or tls12-aead.
scan() {
  local name="$1" expect="$2"
  "$VENV/bin/sslyze" --quiet --mozilla_config=disable \
    --sslv2 --sslv3 --tlsv1 --tlsv1_1 --tlsv1_2 --tlsv1_3 \
    --compression --reneg --heartbleed --openssl_ccs --robot --early_data \
    --json_out="$WORK/$name.json" "$ADDR" >"$WORK/$name.log" 2>&1 || {
    echo "tls-scan: sslyze failed:" >&2
    cat "$WORK/$name.log" >&2
    exit 1
  }
  python3 - "$WORK/$name.json" "$expect" "$name" <<'PY'
import json, re, sys

path, expect, name = sys.argv[1:]
report = json.load(open(path))
problems = []
servers = report["server_scan_results"]
if len(servers) != 1 or servers[0]["scan_status"] != "COMPLETED":
    sys.exit(f"tls-scan: {name}: the scan did not complete: {servers}")
r = servers[0]["scan_result"]

def result(command):
    attempt = r[command]
    if attempt["status"] != "COMPLETED":
        problems.append(f"{command} did not complete: {attempt.get('error_reason')} {attempt.get('error_trace')}")
        return {}
    return attempt["result"]

def accepted(command):
    return [s["cipher_suite"]["name"] for s in result(command).get("accepted_cipher_suites", [])]

for command, label in [("ssl_2_0_cipher_suites", "SSL 2.0"), ("ssl_3_0_cipher_suites", "SSL 3.0"),
                       ("tls_1_0_cipher_suites", "TLS 1.0"), ("tls_1_1_cipher_suites", "TLS 1.1")]:
    if accepted(command):
        problems.append(f"{label} accepted: {accepted(command)}")

tls13_allowed = {"TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"}
tls13 = accepted("tls_1_3_cipher_suites")
if not tls13:
    problems.append("TLS 1.3 refused")
problems += [f"TLS 1.3 suite {s} is not allowed" for s in tls13 if s not in tls13_allowed]

tls12 = result("tls_1_2_cipher_suites").get("accepted_cipher_suites", [])
aead_ecdhe = re.compile(r"^TLS_ECDHE_(ECDSA|RSA)_WITH_(AES_(128|256)_GCM_SHA(256|384)|CHACHA20_POLY1305_SHA256)$")
if expect == "tls13-only":
    if tls12:
        problems.append(f"TLS 1.2 accepted: {[s['cipher_suite']['name'] for s in tls12]}")
else:
    if not tls12:
        problems.append("TLS 1.2 refused although allowed")
    for s in tls12:
        suite, key = s["cipher_suite"]["name"], s.get("ephemeral_key") or {}
        if not aead_ecdhe.match(suite) or key.get("type_name") != "ECDH":
            problems.append(f"TLS 1.2 suite {suite} (key exchange {key.get('type_name')}) is not ECDHE with an AEAD")

if result("tls_compression").get("supports_compression") is not False:
    problems.append("TLS compression is on")
reneg = result("session_renegotiation")
if reneg.get("supports_secure_renegotiation") is not True or reneg.get("is_vulnerable_to_client_renegotiation_dos") is not False:
    problems.append(f"renegotiation: {reneg}")
if result("heartbleed").get("is_vulnerable_to_heartbleed") is not False:
    problems.append("Heartbleed")
if result("openssl_ccs_injection").get("is_vulnerable_to_ccs_injection") is not False:
    problems.append("CCS injection")
robot = result("robot").get("robot_result", "")
if not robot.startswith("NOT_VULNERABLE"):
    problems.append(f"ROBOT: {robot}")
if result("tls_1_3_early_data").get("supports_early_data") is not False:
    problems.append("0-RTT early data accepted")

if problems:
    print(f"tls-scan: {name}: FAILED")
    for p in problems:
        print(f"  - {p}")
    sys.exit(1)
offered = ", ".join(tls13) + (" | TLS 1.2: " + ", ".join(s["cipher_suite"]["name"] for s in tls12) if tls12 else "")
refused = "SSL 2.0, SSL 3.0, TLS 1.0, TLS 1.1" + ("" if tls12 else ", TLS 1.2")
print(f"tls-scan: {name}: ok")
print(f"  accepted: TLS 1.3: {offered}")
print(f"  refused:  {refused}")
print(f"  compression off; secure renegotiation only, no client-initiated renegotiation; no 0-RTT; "
      f"Heartbleed, CCS injection negative; ROBOT {robot}")
PY
}

make_cert ecdsa
make_cert rsa
"$VENV/bin/sslyze" --help | grep -m1 'SSLyze version'

start_medhub ecdsa false
scan default-ecdsa tls13-only
stop_medhub

start_medhub ecdsa true
scan tls12-ecdsa tls12-aead
stop_medhub

start_medhub rsa true
scan tls12-rsa tls12-aead
stop_medhub

echo "tls-scan: all scans passed"
