#!/usr/bin/env bash
# Stand-ins for the public images that docker-compose.yml and the Dockerfile name, for the
# deployment test on machines that cannot reach a public image registry. FOR TESTS ONLY: a real
# deployment pulls the official images. Each tag is built only when the engine lacks it, from
# Debian root file systems made with debootstrap from this machine's configured Debian mirror:
#
#   debian:bookworm-slim  debootstrap --variant=minbase bookworm
#   rust:1-bookworm       the above + gcc, this machine's own Rust toolchain (Debian's rustc is
#                         too old for the lock file) and this machine's CA certificates (so a
#                         container's cargo trusts whatever TLS the network in between presents)
#   redis:7               the above + Debian's redis-server, with protected mode off by default
#                         as in the official image
#   nginx:1.30            Debian sid's nginx (1.30: `http2 on;` and `server ... resolve`)
set -euo pipefail

need() { command -v "$1" >/dev/null 2>&1 || { echo "standin-images: $1 is missing" >&2; exit 1; }; }
need docker
need debootstrap

have() { docker image inspect "$1" >/dev/null 2>&1; }

mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 || true)
[ -n "$mirror" ] || mirror=$(sed -n 's/^deb \(http[^ ]*debian\) .*/\1/p' /etc/apt/sources.list 2>/dev/null | head -n1 || true)
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# debootstrap SUITE TAG [--include=...]: a minimal root file system imported as TAG
bootstrap() {
  local suite=$1 tag=$2
  shift 2
  local root="$work/root-$suite"
  echo "standin-images: debootstrap $suite from $mirror for $tag" >&2
  debootstrap --variant=minbase "$@" "$suite" "$root" "$mirror" >"$work/debootstrap-$suite.log" 2>&1 || {
    tail -n 30 "$work/debootstrap-$suite.log" >&2
    exit 1
  }
  # no services start inside a build, and apt keeps no caches
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod +x "$root/usr/sbin/policy-rc.d"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  echo "deb $mirror $suite main" >"$root/etc/apt/sources.list"
  tar -C "$root" -c . | docker import \
    --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - "$tag" >/dev/null
  rm -rf "$root"
}

if ! have debian:bookworm-slim; then
  bootstrap bookworm debian:bookworm-slim
fi

if ! have rust:1-bookworm; then
  echo "standin-images: rust:1-bookworm from this machine's toolchain" >&2
  sysroot=$(rustc --print sysroot)
  ctx="$work/rust"
  mkdir -p "$ctx/rust"
  # the compiler and the standard library; the documentation is not needed to build
  cp -a "$sysroot/bin" "$sysroot/lib" "$ctx/rust/"
  [ -d "$sysroot/libexec" ] && cp -a "$sysroot/libexec" "$ctx/rust/"
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"
  cat >"$ctx/Dockerfile" <<'EOF'
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY rust /usr/local/rust
ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    CARGO_HOME=/usr/local/cargo \
    CARGO_HTTP_CAINFO=/etc/ssl/certs/ca-certificates.crt
EOF
  docker build -q -t rust:1-bookworm "$ctx" >/dev/null
  rm -rf "$ctx"
fi

if ! have redis:7; then
  echo "standin-images: redis:7 from Debian's redis-server" >&2
  ctx="$work/redis"
  mkdir -p "$ctx"
  cat >"$ctx/Dockerfile" <<'EOF'
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server redis-tools \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data \
 && printf '#!/bin/sh\nexec /usr/bin/redis-server "$@" --protected-mode no\n' > /usr/local/bin/redis-server \
 && chmod +x /usr/local/bin/redis-server
WORKDIR /data
EXPOSE 6379
CMD ["redis-server"]
EOF
  docker build -q -t redis:7 "$ctx" >/dev/null
fi

if ! have nginx:1.30; then
  bootstrap sid nginx-standin-base:sid --include=nginx
  ctx="$work/nginx"
  mkdir -p "$ctx"
  cat >"$ctx/Dockerfile" <<'EOF'
FROM nginx-standin-base:sid
RUN ln -sf /dev/stdout /var/log/nginx/access.log \
 && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 80
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
EOF
  docker build -q -t nginx:1.30 "$ctx" >/dev/null
  docker rmi nginx-standin-base:sid >/dev/null
fi

docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^(debian:bookworm-slim|rust:1-bookworm|redis:7|nginx:1.30) ' >&2
