# syntax=docker/dockerfile:1
#
# pep-server image: a static-ish release binary on a slim Debian, run as an unprivileged user.
# The factory CA key and pep.toml are NOT in the image: mount them at run time (read-only), e.g.
#   docker run -v /etc/pep:/etc/pep:ro -v pep-data:/var/lib/pep -p 5151:5151 pep-server
# pep-cli is in the image too (for `docker exec … pep-cli list-enrollment-ids`), with the shell
# completions and man pages of both. See docs/operations.md. Linted by hadolint (.hadolint.yaml) in
# .ci/run; Docker is not available on the machine this was written on: the image was not built.

# --- build stage -----------------------------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# The whole workspace (the .dockerignore keeps out target/, pep-data/ and every private key).
COPY . .
# The completions and man pages come from the binaries themselves (`completions`, `man`).
RUN cargo build --release --locked --bin pep-server --bin pep-cli \
 && install -D -m 0755 target/release/pep-server /out/bin/pep-server \
 && install -D -m 0755 target/release/pep-cli /out/bin/pep-cli \
 && install -d /out/bash /out/zsh /out/fish /out/man1 \
 && for bin in pep-server pep-cli; do \
      "/out/bin/$bin" completions bash > "/out/bash/$bin" \
   && "/out/bin/$bin" completions zsh > "/out/zsh/_$bin" \
   && "/out/bin/$bin" completions fish > "/out/fish/$bin.fish" \
   && "/out/bin/$bin" man --out /out/man1 || exit 1; \
    done \
 && gzip -9 -n /out/man1/*.1

# --- runtime stage ---------------------------------------------------------------------------------
FROM debian:bookworm-slim
# No version pins on apt packages (DL3008, ignored in .hadolint.yaml): bookworm's security updates
# replace the pinned versions in the archive, which would break the build instead of patching it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 pep \
 && useradd --system --uid 10001 --gid pep --home-dir /var/lib/pep --create-home \
        --shell /usr/sbin/nologin pep \
 && install -d -o root -g pep -m 0750 /etc/pep
COPY --from=build /out/bin/ /usr/local/bin/
COPY --from=build /out/bash/ /usr/share/bash-completion/completions/
COPY --from=build /out/zsh/ /usr/share/zsh/vendor-completions/
COPY --from=build /out/fish/ /usr/share/fish/vendor_completions.d/
COPY --from=build /out/man1/ /usr/local/share/man/man1/
USER pep:pep
WORKDIR /var/lib/pep
# SQLite data (when database_url is sqlite:///var/lib/pep/...); unused with PostgreSQL.
VOLUME ["/var/lib/pep"]
EXPOSE 5151
# pep.toml (and the CA files it names) come from a read-only mount at /etc/pep.
ENV PEP_CONFIG=/etc/pep/pep.toml
ENTRYPOINT ["/usr/local/bin/pep-server"]
CMD ["serve"]
