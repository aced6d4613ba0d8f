#!/usr/bin/env bash
# Builds KenLM's lmplz and build_binary from the kenlm sdist on PyPI (no Debian or
# pip binary ships them). Needs cmake, a C++ compiler and Boost/Eigen/zlib/bz2/lzma
# dev headers. The binaries land in OUT/bin; an existing build is reused.
# Usage: utils/build_kenlm.sh OUT
set -euo pipefail
out=${1:?usage: utils/build_kenlm.sh OUT}
mkdir -p "$out"; out=$(cd "$out" && pwd)
if [ -x "$out/bin/lmplz" ] && [ -x "$out/bin/build_binary" ]; then exit 0; fi
for tool in cmake c++ make; do
  command -v $tool >/dev/null || { echo "build_kenlm: '$tool' is missing (apt-get install cmake build-essential)" >&2; exit 1; }
done
for hdr in boost/program_options.hpp eigen3/Eigen/Core zlib.h bzlib.h lzma.h; do
  [ -e /usr/include/$hdr ] || { echo "build_kenlm: header /usr/include/$hdr is missing: apt-get install libboost-program-options-dev libboost-system-dev libboost-thread-dev libboost-test-dev libeigen3-dev zlib1g-dev libbz2-dev liblzma-dev" >&2; exit 1; }
done
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
py=${PYTHON:-python3}
echo "[build_kenlm] fetching the kenlm sdist" >&2
"$py" -m pip download -q --no-deps --no-build-isolation --no-binary :all: -d "$work" kenlm
tar -xzf "$work"/kenlm-*.tar.gz -C "$work"
src=$(find "$work" -maxdepth 1 -type d -name 'kenlm-*' | head -1)
echo "[build_kenlm] building lmplz and build_binary (about 2 minutes)" >&2
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DKENLM_MAX_ORDER=8 >"$work/cmake.log" 2>&1 \
  || { tail -30 "$work/cmake.log" >&2; exit 1; }
cmake --build "$work/build" --target lmplz build_binary -j "$(nproc)" >"$work/build.log" 2>&1 \
  || { tail -30 "$work/build.log" >&2; exit 1; }
mkdir -p "$out/bin.tmp"
cp "$work/build/bin/lmplz" "$work/build/bin/build_binary" "$out/bin.tmp/"
rm -rf "$out/bin"; mv "$out/bin.tmp" "$out/bin"
echo "[build_kenlm] installed to $out/bin" >&2
