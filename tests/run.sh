#!/usr/bin/env bash
# Runs every test of flowmail: installs what the tests need when it is missing (the
# mail servers, PostgreSQL and Python's venv from apt, Node.js and the OAuth2 test server
# from npm, componentize-py from the Python registry, the wasm32-wasip2 target), then
# `cargo test --workspace`, and the end-to-end tests once more with every workspace's
# store on PostgreSQL (FLOWMAIL_TEST_STORE=postgres). Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    echo "error: installing $* needs root; run this as root or install sudo" >&2
    exit 1
  fi
}

# Debian packages: the mail servers run as private instances on loopback ports, so the
# system services stay off. Node.js runs the OAuth2 test server. time measures peak
# memory (/usr/bin/time -v); procps gives ps and pgrep. Chromium and chromedriver run the
# settings page's tests in a real headless browser.
need=()
for pair in \
  /usr/sbin/dovecot:dovecot-core /usr/lib/dovecot/imap:dovecot-imapd \
  /usr/lib/dovecot/lmtp:dovecot-lmtpd /usr/sbin/postfix:postfix \
  /usr/bin/openssl:openssl /usr/bin/ps:procps /usr/bin/time:time \
  /usr/bin/chromium:chromium /usr/bin/chromedriver:chromium-driver; do
  [ -e "${pair%%:*}" ] || need+=("${pair#*:}")
done
# PostgreSQL: the shared-store tests start a private server with initdb and pg_ctl.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
# Python with venv builds the example plugin of examples/python-plugin/ (componentize-py).
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3 python3-venv)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The OAuth2 server the tests run (oauth2-mock-server, pinned in its package-lock).
if [ ! -d tests/oauth2/node_modules/oauth2-mock-server ] \
  || [ tests/oauth2/package-lock.json -nt tests/oauth2/node_modules/.package-lock.json ]; then
  npm ci --prefix tests/oauth2 --no-audit --no-fund
fi

# componentize-py, pinned by the build script of the Python example plugin.
examples/python-plugin/build.sh --install

# The pinned toolchain and the plugin target (the host's build script adds it too).
rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2

cargo test --workspace "$@"
# The same end-to-end tests on the shared store: each workspace gets a database of its
# own on one private PostgreSQL server per test process.
FLOWMAIL_TEST_STORE=postgres exec cargo test --workspace "$@"
