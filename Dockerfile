# proxyd container image (multi-stage; docs: README "Container image and compose").
#
#   docker build -t proxyd .                       # CMD proxyd -c /etc/proxyd/proxyd.ini (conf/container.ini)
#   docker build --target kamal -t proxyd:kamal .  # CMD kamal-proxy run (what Kamal boots as "kamal-proxy")
#   podman build --format docker ...               # podman: the docker format keeps HEALTHCHECK
#
# BASE is any Debian bookworm image; tests build from a local one made with
# mmdebstrap (--build-arg BASE=localhost/...). A stage installs only the
# packages its base lacks, so a base that has them needs no network.
ARG BASE=debian:bookworm-slim

# ---- build: compile once, install into /out ----
FROM ${BASE} AS build
# the build dependencies first (tests/deps.txt): this layer survives source changes
COPY tests/deps.txt /tmp/deps.txt
RUN set -eu; pkgs="$(cat /tmp/deps.txt) libcap2-bin"; \
    if [ "$(dpkg-query -W -f='${Status}\n' $pkgs 2>/dev/null | grep -c 'install ok installed')" != "$(echo $pkgs | wc -w)" ]; then \
      apt-get update -qq; \
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs >/dev/null; \
      apt-get clean; rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; fi
WORKDIR /src
COPY . .
# One make: `install` builds what is missing (nothing after `all`) with the
# same flags, so nothing is compiled twice. Debian's hardening flags, stripped.
# cap_net_bind_service on proxyd: ports 80/443 as the non-root user without
# root or a sysctl (the runtime's bounding set keeps the capability by default
# in Docker and podman).
RUN set -eu; make -s -j"$(nproc)" install B=/tmp/b DESTDIR=/out PREFIX=/usr \
      CFLAGS="$(dpkg-buildflags --get CPPFLAGS) $(dpkg-buildflags --get CFLAGS)" \
      LDFLAGS="$(dpkg-buildflags --get LDFLAGS)"; \
    strip --strip-unneeded /out/usr/sbin/proxyd /out/usr/bin/proxyctl; \
    rm -rf /out/usr/share/man /out/usr/lib/systemd /out/etc/logrotate.d; \
    install -m 0644 conf/container.ini /out/etc/proxyd/proxyd.ini; \
    setcap cap_net_bind_service=+ep /out/usr/sbin/proxyd; \
    getcap /out/usr/sbin/proxyd

# ---- runtime: the libraries, the install tree, a non-root user ----
FROM ${BASE} AS runtime
# libcurl4 is dlopen()ed by ACME; curl runs the HEALTHCHECK; openssl makes
# `kamal-proxy run`'s self-signed default certificate.
# The list is conf/runtime-packages.txt (the container test's base image
# takes the same file): a library proxyd links gets one line there.
COPY conf/runtime-packages.txt /tmp/runtime-packages.txt
RUN set -eu; pkgs="$(cat /tmp/runtime-packages.txt)"; rm /tmp/runtime-packages.txt; \
    if [ "$(dpkg-query -W -f='${Status}\n' $pkgs 2>/dev/null | grep -c 'install ok installed')" != "$(echo $pkgs | wc -w)" ]; then \
      apt-get update -qq; \
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs >/dev/null; \
      apt-get clean; rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; fi; \
    groupadd -g 1000 proxyd; \
    useradd -u 1000 -g proxyd -d /home/kamal-proxy -s /usr/sbin/nologin proxyd; \
    install -d -o proxyd -g proxyd -m 0750 /var/lib/proxyd /run/proxyd /home/kamal-proxy \
      /home/kamal-proxy/.config /home/kamal-proxy/.config/kamal-proxy /home/kamal-proxy/.apps-config
COPY --from=build /out/ /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/home/kamal-proxy
USER proxyd:proxyd
WORKDIR /home/kamal-proxy
EXPOSE 80 443
STOPSIGNAL SIGTERM

# ---- kamal: `kamal-proxy run` as the command (Kamal runs the image without one) ----
FROM runtime AS kamal
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD curl -fsS -o /dev/null "http://127.0.0.1:${HTTP_PORT:-80}/health" || exit 1
CMD ["kamal-proxy", "run"]

# ---- the default image: proxyd on conf/container.ini ----
FROM runtime
VOLUME ["/var/lib/proxyd", "/run/proxyd"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD curl -fsS -o /dev/null "http://127.0.0.1:${PROXYD_HTTP_PORT:-80}/health" || exit 1
CMD ["proxyd", "-c", "/etc/proxyd/proxyd.ini"]
