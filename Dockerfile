# syntax=docker/dockerfile:1
#
# pep-server image: a static-ish release binary on a slim Debian, run as an unprivileged user.
# The factory CA key and pep.toml are NOT in the image: mount them at run time (read-only), e.g.
#   docker run -v /etc/pep:/etc/pep:ro -v pep-data:/var/lib/pep -p 5151:5151 pep-server
# See docs/operations.md. (Docker is not available on the machine this was written on: this file is
# kept simple and was reviewed, not built.)

# --- build stage -----------------------------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# The whole workspace (the .dockerignore keeps out target/, pep-data/ and every private key).
COPY . .
RUN cargo build --release --locked --bin pep-server \
 && install -D -m 0755 target/release/pep-server /out/pep-server

# --- runtime stage ---------------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 pep \
 && useradd --system --uid 10001 --gid pep --home-dir /var/lib/pep --create-home \
        --shell /usr/sbin/nologin pep \
 && install -d -o root -g pep -m 0750 /etc/pep
COPY --from=build /out/pep-server /usr/local/bin/pep-server
USER pep:pep
WORKDIR /var/lib/pep
# SQLite data (when database_url is sqlite:///var/lib/pep/...); unused with PostgreSQL.
VOLUME ["/var/lib/pep"]
EXPOSE 5151
# pep.toml (and the CA files it names) come from a read-only mount at /etc/pep.
ENV PEP_CONFIG=/etc/pep/pep.toml
ENTRYPOINT ["/usr/local/bin/pep-server"]
CMD ["serve"]
