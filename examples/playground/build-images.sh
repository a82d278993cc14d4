#!/usr/bin/env bash
# Builds the playground's images without a registry:
#   weft:playground       FROM scratch: weft, weft-controller, weft-proxy, weft-demo (static)
#   weft-init:playground  FROM scratch: weft-proxy and this machine's iptables (for `weft-proxy init`)
# Where a registry is available, Dockerfile.source and Dockerfile.init build the same images.
# WEFT_IMAGE_TAG replaces the tag `playground` (tests use their own, so runs never collide).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${WEFT_BIN_DIR:-$root/target/x86_64-unknown-linux-gnu/release}
tag=${WEFT_IMAGE_TAG:-playground}
for b in weft weft-controller weft-proxy weft-demo; do
  [ -x "$bin/$b" ] || { echo "missing $bin/$b: run 'cargo build --release --workspace' first" >&2; exit 1; }
done
command -v iptables >/dev/null || { echo "the init image copies this machine's iptables: install iptables" >&2; exit 1; }

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
for b in weft weft-controller weft-proxy weft-demo; do
  # Debug line tables are for profiling on the build machine; images get stripped copies.
  strip -o "$ctx/$b" "$bin/$b" 2>/dev/null || cp "$bin/$b" "$ctx/$b"
done
docker build -q -t "weft:$tag" -f "$here/Dockerfile" "$ctx" >/dev/null
echo "built weft:$tag"

# A minimal root for the init image: the iptables multi-call binaries with their shared
# libraries, the extension modules they load at run time, and the names iptables is called by.
rootfs=$ctx/init-rootfs
mkdir -p "$rootfs/usr/local/bin" "$rootfs/usr/sbin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/run"
cp "$ctx/weft-proxy" "$rootfs/usr/local/bin/"
copy_with_libs() {
  local f=$1
  mkdir -p "$rootfs$(dirname "$f")"
  cp -L "$f" "$rootfs$f"
  ldd "$f" 2>/dev/null | grep -o '/[^ ]*' | while read -r lib; do
    [ -e "$rootfs$lib" ] && continue
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
}
multis=()
for m in xtables-nft-multi xtables-legacy-multi; do
  p=$(command -v "$m" || true)
  [ -n "$p" ] && { copy_with_libs "$p"; multis+=("$p"); }
done
[ ${#multis[@]} -gt 0 ] || { echo "no xtables multi-call binary found" >&2; exit 1; }
# Extension modules (tcp, owner, REDIRECT, …) are loaded from the compiled-in XTABLES_LIBDIR.
xt=""
for d in /usr/lib/x86_64-linux-gnu/xtables /usr/lib64/xtables /usr/lib/xtables /lib/x86_64-linux-gnu/xtables; do
  [ -d "$d" ] && { xt=$d; break; }
done
[ -n "$xt" ] || { echo "no xtables extension directory found" >&2; exit 1; }
mkdir -p "$rootfs$xt"
for so in "$xt"/*.so; do cp -L "$so" "$rootfs$xt/"; done
for f in /etc/protocols /etc/ethertypes; do [ -e "$f" ] && cp "$f" "$rootfs$f"; done
nft=$(command -v xtables-nft-multi || true)
legacy=$(command -v xtables-legacy-multi || true)
# The default iptables: the backend this machine uses (weft-proxy init also picks per namespace).
default=$nft; iptables --version 2>/dev/null | grep -q legacy && default=${legacy:-$nft}
for name in iptables ip6tables iptables-save ip6tables-save iptables-restore ip6tables-restore; do
  [ -n "$default" ] && ln -sf "$default" "$rootfs/usr/sbin/$name"
  [ -n "$nft" ] && ln -sf "$nft" "$rootfs/usr/sbin/${name/tables/tables-nft}"
  [ -n "$legacy" ] && ln -sf "$legacy" "$rootfs/usr/sbin/${name/tables/tables-legacy}"
done
docker build -q -t "weft-init:$tag" -f "$here/Dockerfile.init-local" "$ctx" >/dev/null
echo "built weft-init:$tag"
