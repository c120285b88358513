#!/usr/bin/env bash
# Compares the Python plugin with the embedded Rust plugin on the same host, in one run:
#
#   examples/python-plugin/bench.sh [FLOWMAIL_BINARY]   (default: the release build)
#
# For each plugin it times `flowmail run` of a workflow whose step runs N+1 times and once,
# on a copy of the demo workspace with a warm compiled-component cache; the difference
# over N is the time per step, start-up left out. The steps: `read-mailbox` over the demo
# Maildir (7 messages fetched and parsed, 4 matched), and `send-mail` of a short message
# into the file outbox (which flushes each file to disk). Peak RSS is that of the N+1 run.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$here/../.."
bin="$(realpath "${1:-${CARGO_TARGET_DIR:-$repo/target}/release/flowmail}")"
n="${N:-200}"
[ -x "$bin" ] || { echo "no flowmail binary at $bin: build it with 'cargo build --release -p flowmail'" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "/usr/bin/time is missing: apt-get install -y time" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$here/build.sh" "$work/python.wasm" >/dev/null

workflow() { # NAME ACTION COUNT
    local with
    if [ "$2" = read-mailbox ]; then
        with='      filter: { subject_contains: "[ALERT]" }
      limit: 100'
    else
        with='      message: { to: ops@demo.example, subject: "bench ${{ item }}", text: "hello" }'
    fi
    cat > "$3" <<YAML
name: $1
steps:
  - id: step
    action: $2
    for_each: "\${{ [$(seq -s, 1 "$4")] }}"
    with:
      account: demo
$with
YAML
}

secs() { # PLUGIN-ARGS... -- WORKFLOW ; prints "seconds peak-kB"
    /usr/bin/time -o "$work/time" -f '%e %M' "$bin" "$@" >/dev/null 2>&1
    tail -1 "$work/time"
}

printf '%-14s %-8s %14s %14s\n' step plugin "µs per step" "peak RSS MB"
for action in read-mailbox send-mail; do
    for plugin in rust python; do
        ws="$work/$plugin-$action"
        mkdir -p "$ws"
        cp -r "$repo/flowmail.toml" "$repo/workflows" "$ws/"
        args=()
        [ "$plugin" = python ] && args=(--plugin "$work/python.wasm")
        workflow one "$action" "$ws/workflows/one.yaml" 1
        workflow many "$action" "$ws/workflows/many.yaml" $((n + 1))
        cd "$ws"
        "$bin" "${args[@]}" run workflows/one.yaml >/dev/null 2>&1 # fills the cache
        read -r t1 _ <<<"$(secs "${args[@]}" run workflows/one.yaml)"
        read -r tn rss <<<"$(secs "${args[@]}" run workflows/many.yaml)"
        per="$(python3 -c "print(round(($tn - $t1) / $n * 1e6))")"
        printf '%-14s %-8s %14s %14s\n' "$action" "$plugin" "$per" "$(python3 -c "print(round($rss / 1024, 1))")"
        cd - >/dev/null
    done
done
echo "($(nproc) cores, N=$n)"
