#!/usr/bin/env bash
# Debian packages the tests use and pip cannot provide: Chromium and its ChromeDriver (the browser test of the
# local stack, driven by Selenium; no browser download) and docker-compose (`docker-compose config` validates
# infra/docker-compose.yaml offline; no Docker engine is needed). Idempotent; run by `make test`.
set -euo pipefail
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null || missing+=(docker-compose)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  sudo=sudo
  command -v sudo >/dev/null || { echo "install as root: apt-get install -y ${missing[*]}" >&2; exit 1; }
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
${sudo:-} apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || {
  ${sudo:-} apt-get update -q >/dev/null && ${sudo:-} apt-get install -y -q "${missing[@]}" >/dev/null; }
