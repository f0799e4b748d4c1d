#!/usr/bin/env bash
# Set up a fresh machine: a virtualenv at .venv/ with everything hear-contrastune needs.
# Idempotent: a second run installs nothing new. Needs only the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: a C compiler and Python headers to build webrtcvad (Resemblyzer imports it),
# and espeak-ng, whose voices the espeak-word task renders.
need=()
command -v gcc >/dev/null 2>&1 || need+=(build-essential python3-dev)
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q -U pip

# torchaudio 2.11's wheel links the CUDA build of torch; 2.14.1 is the pair known to work.
$PIP install -q torch==2.14.1 torchaudio==2.11.0

# These three pin what cannot install on Python 3.11 (heareval: numpy==1.19.2, tensorflow;
# Resemblyzer: the `typing` backport; tinysoundfont: pyaudio, needed only for playback).
# Install them without their pins; pyproject.toml lists what they really import.
$PIP install -q --no-deps heareval==2021.1.3 resemblyzer==0.1.4 tinysoundfont==0.3.7 \
  hearvalidator==2021.0.2

$PIP install -q -e '.[test]'
