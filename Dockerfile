# The one Plantwatch image: CLI, data-plane services and the operator (multi-arch: amd64, arm64
# for the Raspberry Pis and the Jetson). Build: docker buildx build --platform linux/amd64,linux/arm64 .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY crds crds
COPY services services
COPY operator operator
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
RUN useradd --uid 10001 --user-group --no-create-home plantwatch
USER 10001
ENTRYPOINT ["plantwatch"]
