# pontoon daemon image: build in a full Rust image, run in a slim one as a non-root user.
# The entrypoint is exec-form, so no shell is involved at run time.
FROM rust:1.95-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin pontoon \
 && install -D -m 0755 target/release/pontoon /out/pontoon

# helm and kustomize, which charts and Kustomize folders are expanded with: built from the
# Go module proxy at the versions pontoon is tested with (tests/support/go-build.sh).
FROM golang:1.26-bookworm AS tools
ENV CGO_ENABLED=0
RUN go install -trimpath -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=v4.3.1" \
      helm.sh/helm/v4/cmd/helm@v4.3.1 \
 && go install -trimpath -ldflags "-s -w" sigs.k8s.io/kustomize/kustomize/v5@v5.8.2

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 pontoon \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin pontoon
COPY --from=build /out/pontoon /usr/local/bin/pontoon
COPY --from=tools /go/bin/helm /go/bin/kustomize /usr/local/bin/
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/pontoon", "run"]
CMD ["--config", "/etc/pontoon/pontoon.yaml"]
