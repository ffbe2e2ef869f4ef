# Postern with its built login UI. Build: docker compose build (or docker build -t postern .).
# Stage 1 builds the API and `trunk build --release`s the UI with pinned tools from the registries.
FROM rust:1.95-bookworm AS build
RUN rustup target add wasm32-unknown-unknown \
 && cargo install --locked trunk --version 0.21.14 \
 && cargo install wasm-bindgen-cli --version 0.2.130 \
 && apt-get update && apt-get install -y --no-install-recommends nodejs npm brotli \
 && npm install --global binaryen@132.0.0 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN scripts/build-ui && cargo build --release --locked -p backend

# Stage 2: the binary, the UI and nothing else, running as an unprivileged user.
FROM debian:bookworm-slim
RUN useradd --system --home-dir /var/lib/postern --create-home postern
COPY --from=build /src/target/release/postern /usr/local/bin/postern
COPY --from=build /src/dist /usr/share/postern/ui
USER postern
# The database holds users, clients, sessions, tokens and the signing keys: keep the volume.
VOLUME /var/lib/postern
# The key-encryption key is generated beside the database on first start; mount it from a secret
# (POSTERN_KEY_ENCRYPTION_KEY_FILE=/run/secrets/…) so that a copy of the volume alone signs nothing.
ENV POSTERN_DATABASE=/var/lib/postern/postern.db \
    POSTERN_KEY_ENCRYPTION_KEY_FILE=/var/lib/postern/postern.kek \
    POSTERN_UI__DIR=/usr/share/postern/ui \
    POSTERN_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["postern"]
CMD ["--config", "/etc/postern/postern.toml", "serve"]
