#!/usr/bin/env bash
# System prerequisites of `make setup`: Python 3.11, a Java 17 JDK and Maven (for the jars), a native
# BLAS for ALS, and the load tools redis-benchmark and wrk. Missing ones are installed from Debian
# when we are root; otherwise we say what to install. Without libblas.so.3 Spark falls back to a
# pure-Java BLAS (same results, ~25% slower ALS here) and logs "netlib-blas: dlopen (libblas.so.3) failed".
set -euo pipefail

missing=()
if ! command -v python3.11 >/dev/null; then
  missing+=(python3.11 python3.11-venv)
elif ! python3.11 -c "import ensurepip, venv" 2>/dev/null; then
  missing+=(python3.11-venv)  # Debian splits venv/ensurepip out of the interpreter
fi
command -v javac >/dev/null || missing+=(openjdk-17-jdk-headless)  # `make jars` compiles jvm/src
command -v mvn >/dev/null || missing+=(maven)
/sbin/ldconfig -p 2>/dev/null | grep -q 'libblas\.so\.3 ' || missing+=(libopenblas0-pthread)
command -v runuser >/dev/null || missing+=(util-linux)

# Optional load tools: `make bench-publish` uses redis-benchmark, `make bench-api` wrk; a failed
# install never fails setup.
optional=()
command -v redis-benchmark >/dev/null || optional+=(redis-tools)
command -v wrk >/dev/null || optional+=(wrk)
if [ ${#optional[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${optional[@]}" >/dev/null; } \
    || echo "prerequisites: could not install ${optional[*]} (optional: the benchmarks' load tools)"
fi

if [ ${#missing[@]} -eq 0 ]; then
  echo "prerequisites: all present"
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "prerequisites: installing ${missing[*]} from Debian"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  exit 0
fi
for pkg in "${missing[@]}"; do
  case "$pkg" in
    libopenblas0-pthread) echo "prerequisites: no native BLAS (optional): ALS will use Java BLAS";;
    *) echo "prerequisites: please install $pkg (not root, so not installing it)"; fail=1;;
  esac
done
exit "${fail:-0}"
