#!/usr/bin/env bash
# ctest-timeout: 300
# Install zinfer into a scratch prefix, then build a program that finds it
# both ways a user would: CMake's find_package(zinfer) and pkg-config.
set -euo pipefail
build=$(cd "$1" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix="$work/prefix"
cmake --install "$build" --prefix "$prefix" > "$work/install.log"
test -f "$prefix/lib/cmake/zinfer/zinferConfig.cmake" || test -f "$prefix"/lib/*/cmake/zinfer/zinferConfig.cmake
test -x "$prefix/bin/zinfer"
test -x "$prefix/bin/zinfer-broker"

mkdir -p "$work/app"
cat > "$work/app/main.c" <<'C'
#include <stdio.h>
#include <zinfer.h>
int main (void)
{
    zi_tensor_t *t = zi_tensor_new (ZI_DT_F32, 2, (int64_t[]){2, 3});
    printf ("zinfer %s: %lld elements\n", ZINFER_VERSION, (long long) zi_tensor_count (t));
    zi_tensor_destroy (&t);
    return 0;
}
C
cat > "$work/app/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.18)
project(app C)
find_package(zinfer REQUIRED)
add_executable(app main.c)
target_link_libraries(app PRIVATE zinfer::zinfer)
CM
cmake -S "$work/app" -B "$work/app/build" -DCMAKE_PREFIX_PATH="$prefix" > "$work/cmake.log"
cmake --build "$work/app/build" > "$work/build.log"
libdir=$(dirname "$(find "$prefix" -name 'libzinfer.so' | head -1)")
out=$(LD_LIBRARY_PATH="$libdir" "$work/app/build/app")
echo "find_package: $out"
[ "$out" = "zinfer 0.1.0: 6 elements" ] || { echo "unexpected output: $out"; exit 1; }

# pkg-config
pc=$(dirname "$(find "$prefix" -name zinfer.pc | head -1)")
flags=$(PKG_CONFIG_PATH="$pc" pkg-config --cflags --libs zinfer)
cc "$work/app/main.c" -o "$work/app/app-pc" $flags
out=$(LD_LIBRARY_PATH="$libdir" "$work/app/app-pc")
echo "pkg-config: $out"
[ "$out" = "zinfer 0.1.0: 6 elements" ] || { echo "unexpected output: $out"; exit 1; }
echo "install: 2 passed, 0 failed"
