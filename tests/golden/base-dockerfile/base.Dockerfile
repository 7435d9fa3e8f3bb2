# The user's own base stage.
FROM debian:bookworm-slim AS base
RUN echo "custom base" > /etc/custom-base
