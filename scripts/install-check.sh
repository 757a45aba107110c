#!/usr/bin/env bash
# Installs into a staging prefix and builds examples/hello.c the way a user
# would: with the installed header, static library and pkg-config file. Then
# runs it and asks it for a page.
set -euo pipefail
O=${1:-build/release}
stage=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$stage"' EXIT
pid=
make --no-print-directory -s install PREFIX="$stage" >/dev/null
export PKG_CONFIG_PATH="$stage/lib/pkgconfig"
cc -std=gnu17 -Wall -Wextra -Werror -o "$stage/hello" examples/hello.c \
   $(pkg-config --cflags myriad) -L"$stage/lib" -Wl,-Bstatic -lmyriad -Wl,-Bdynamic \
   $(pkg-config --libs-only-other --static myriad) $(pkg-config --static --libs-only-l myriad | sed 's/-lmyriad//')
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$stage/hello" serve --port "$port" 2>"$stage/log" & pid=$!
for _ in $(seq 50); do
  body=$(curl -s "http://127.0.0.1:$port/" 2>/dev/null) && break
  sleep 0.1
done
if [ "${body:-}" != "Hello, World!" ]; then
  echo "install-check: FAILED: the installed example answered '${body:-nothing}'" >&2
  cat "$stage/log" >&2
  exit 1
fi
echo "install-check: ok (make install, pkg-config, examples/hello.c answered)"
