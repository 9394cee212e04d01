#!/usr/bin/env bash
# Side environments for the engine checks (engines/check.py), under .engines/:
#   .engines/vllm   vLLM (engines/vllm.txt); it cannot share glmlab's environment (see that file)
#   .engines/llama  llama-cpp-python built from its sdist, and that sdist's llama.cpp converter
#                   (.engines/llama-src/vendor/llama.cpp/convert_hf_to_gguf.py) with its gguf-py
# Each environment is rebuilt only when its requirements file changed (a stamp holds the copy it was
# built from). Usage: engines/setup.sh [vllm] [llama]   (both when none is named)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
ROOT=.engines
LLAMA_VERSION=$(sed -n 's/^llama-cpp-python==//p' engines/llama.txt)
mkdir -p "$ROOT"

fresh() {  # fresh NAME: true when .engines/NAME was built from today's engines/NAME.txt
    cmp -s "engines/$1.txt" "$ROOT/$1/.installed"
}

venv() {
    test -x "$ROOT/$1/bin/python" || "$PYTHON" -m venv "$ROOT/$1"
    "$ROOT/$1/bin/python" -m pip install --quiet --upgrade pip
}

setup_vllm() {
    fresh vllm && return
    echo "engines: building $ROOT/vllm (vLLM and its torch: about 10 GB, several minutes)"
    venv vllm
    "$ROOT/vllm/bin/python" -m pip install --quiet -r engines/vllm.txt
    cp engines/vllm.txt "$ROOT/vllm/.installed"
}

setup_llama() {
    fresh llama && return
    echo "engines: building $ROOT/llama (compiles llama.cpp: several minutes)"
    venv llama
    local src="$ROOT/llama-src"
    if [ ! -f "$src/vendor/llama.cpp/convert_hf_to_gguf.py" ]; then
        rm -rf "$src" "$ROOT/sdist" && mkdir -p "$src"
        "$ROOT/llama/bin/python" -m pip download --quiet --no-deps --no-binary llama-cpp-python \
            -d "$ROOT/sdist" "llama-cpp-python==$LLAMA_VERSION"
        tar -xzf "$ROOT"/sdist/llama_cpp_python-"$LLAMA_VERSION".tar.gz -C "$src" --strip-components 1
    fi
    CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
        "$ROOT/llama/bin/python" -m pip install --quiet "$src" -r engines/llama.txt \
        "$src/vendor/llama.cpp/gguf-py"
    cp engines/llama.txt "$ROOT/llama/.installed"
}

for name in "${@:-vllm llama}"; do
    for one in $name; do "setup_$one"; done
done
