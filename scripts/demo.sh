#!/usr/bin/env bash
# The built-in example, end to end: build a sample service, start it, create
# an update from its fix, apply it live, show the change, undo it.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
need=()
for c in gcc make patch; do command -v "$c" >/dev/null || need+=("$c"); done
if [ ${#need[@]} -gt 0 ]; then
	echo "demo: installing ${need[*]} (apt-get)"
	apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
export PATH=/usr/local/go/bin:$PATH
command -v go >/dev/null || { echo "demo: Go 1.26 or later is needed (go.dev/dl)" >&2; exit 1; }
work=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT

(cd "$here" && go build -o "$work/livesplice" ./cmd/livesplice)
ls="$work/livesplice"
cp -r "$here/examples/price" "$work/src"
cp -r "$work/src" "$work/run"
echo "== 1. build and start the service (plain make)"
make -s -C "$work/run"
"$work/run/price" >"$work/out.log" &
pid=$!
sleep 1.2
tail -n 2 "$work/out.log"

echo "== 2. create an update from the fix"
cat "$work/src/fix.patch"
"$ls" create --src "$work/src" -o "$work/fix.lsu" "$work/src/fix.patch"
"$ls" info "$work/fix.lsu"

echo "== 3. apply it to the running service (pid $pid)"
"$ls" apply --pid "$pid" "$work/fix.lsu"
"$ls" show --pid "$pid"
sleep 1.2
tail -n 2 "$work/out.log"

echo "== 4. undo it"
"$ls" undo --pid "$pid" fix
sleep 1.2
tail -n 2 "$work/out.log"
echo "== the service ran throughout: $(wc -l <"$work/out.log") lines, pid $pid"
