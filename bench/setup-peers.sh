#!/usr/bin/env bash
# Installs the optional peers that bench/run.py compares chatd against:
#   - LiteLLM proxy   -> bench/.peers/litellm-venv      (PyPI: litellm[proxy]==1.106.12)
#   - Portkey gateway -> bench/.peers/node_modules      (npm: @portkey-ai/gateway@1.15.2)
#   - nginx           -> system package nginx-light (or nginx), via apt-get
# Idempotent: a peer that is already installed at the pinned version is left alone.
# Each peer is optional; a failure installing one is reported and the others still install.
# Usage: bash bench/setup-peers.sh [litellm] [portkey] [nginx]   (default: all three)
set -uo pipefail

LITELLM_VERSION=1.106.12 # the newest that installs from the registries here; never 1.82.7/1.82.8
PORTKEY_VERSION=1.15.2

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
peers="$here/.peers"
mkdir -p "$peers"
wanted=("$@")
[ ${#wanted[@]} -eq 0 ] && wanted=(litellm portkey nginx)
failed=()

want() { [[ " ${wanted[*]} " == *" $1 "* ]]; }
log() { printf '\n== %s\n' "$*"; }

install_litellm() {
    local venv="$peers/litellm-venv"
    local have
    have="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null)"
    if [ "$have" = "$LITELLM_VERSION" ] && [ -x "$venv/bin/litellm" ]; then
        log "LiteLLM $have already in $venv"
        return 0
    fi
    log "LiteLLM $LITELLM_VERSION -> $venv (takes a few minutes)"
    python3 -m venv "$venv" || return 1
    "$venv/bin/python" -m pip install --quiet --upgrade pip || return 1
    "$venv/bin/python" -m pip install --quiet "litellm[proxy]==$LITELLM_VERSION" || return 1
    "$venv/bin/litellm" --version >/dev/null 2>&1 || echo "(litellm --version failed; run.py will report it)"
}

install_portkey() {
    local pkg="$peers/node_modules/@portkey-ai/gateway/package.json"
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        log "Portkey needs node and npm: apt-get install -y nodejs npm"
        return 1
    fi
    if [ -f "$pkg" ] && grep -q "\"version\": *\"$PORTKEY_VERSION\"" "$pkg"; then
        log "Portkey gateway $PORTKEY_VERSION already in $peers/node_modules"
        return 0
    fi
    log "Portkey gateway $PORTKEY_VERSION -> $peers/node_modules"
    [ -f "$peers/package.json" ] || echo '{"name":"chatd-bench-peers","private":true}' >"$peers/package.json"
    npm install --prefix "$peers" --no-audit --no-fund --save-exact "@portkey-ai/gateway@$PORTKEY_VERSION"
}

install_nginx() {
    if command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; then
        log "nginx already installed: $( (command -v nginx || echo /usr/sbin/nginx) )"
        return 0
    fi
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { log "nginx: need root (or sudo) for apt-get"; return 1; }
        sudo=sudo
    fi
    log "nginx via apt-get (nginx-light, else nginx)"
    $sudo apt-get update -qq || return 1
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nginx-light ||
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nginx
    # run.py starts its own nginx with its own config; the distro service is not needed.
    # (On a machine with systemd the package may have started it on port 80: stop it with
    # `systemctl disable --now nginx` if you do not want it.)
}

for peer in litellm portkey nginx; do
    if want "$peer"; then
        "install_$peer" || { failed+=("$peer"); echo "!! $peer: install failed"; }
    fi
done

echo
if [ ${#failed[@]} -gt 0 ]; then
    echo "setup-peers: not installed: ${failed[*]} (run.py skips absent peers)"
    exit 1
fi
echo "setup-peers: done. Now: python3 bench/run.py"
