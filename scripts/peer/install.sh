#!/bin/sh
# Installs node-llama-cpp 3.21.1 (pinned in package.json) into scripts/peer/node_modules from the
# npm registry, with the prebuilt CPU binary for this platform and no GPU variants: its postinstall
# is told not to download or build llama.cpp, so a missing prebuilt binary fails loudly instead.
set -eu
cd "$(dirname "$0")"
export NODE_LLAMA_CPP_SKIP_DOWNLOAD=true
npm install --omit=optional --no-audit --no-fund
platform=$(node -p 'process.platform === "darwin" ? (process.arch === "arm64" ? "mac-arm64-metal" : "mac-x64") : process.platform === "win32" ? "win-" + process.arch : "linux-" + process.arch')
npm install --no-save --no-audit --no-fund "@node-llama-cpp/$platform@3.21.1"
node -e 'import("node-llama-cpp").then(async (m) => { const l = await m.getLlama({ gpu: false, build: "never" }); console.log("node-llama-cpp ready:", l.buildType, "build,", l.cpuMathCores, "math cores"); })'
