#!/usr/bin/env bash
# Install, upgrade or remove the RMM endpoint agent as a systemd service.
#
#   sudo ./install-linux.sh --collector-url https://noc.example.net:8443 --token-file token.txt \
#        [--components catalogue.toml] [--kind pc|server] [--ca-file noc-ca.pem] \
#        [--command-key KEY_ID:BASE64 ...] [--operator-key KEY_ID:BASE64 ...] \
#        [--offboard-approvals N] [--package SPEC] [--python python3.11] [--no-start] \
#        [--no-service]
#   sudo ./install-linux.sh --uninstall [--purge]
#
# Lays out:
#   /opt/rmm-agent/venv             a virtualenv holding the agent and its few dependencies
#   /etc/rmm-agent/agent.toml       the config, mode 0600 (it holds the enrollment token)
#   /var/lib/rmm-agent/             credential and spool, mode 0700 (systemd's StateDirectory)
#   /etc/systemd/system/rmm-agent.service   (not with --no-service)
#
# Without systemd, --no-service installs and enrolls the agent but no unit: start
# `/opt/rmm-agent/venv/bin/rmm-agent run` under the host's own supervisor (an OpenRC script is in
# deploy/agent/openrc/; see "Without systemd" in deploy/README.md).
#
# Running it again upgrades the agent in place and restarts the service; an existing config is
# kept unless --collector-url is given again. The enrollment token is read from a file (or from
# standard input with --token-file -, or from $RMM_ENROLLMENT_TOKEN), never from the command line,
# so it stays out of shell history and process listings.
set -euo pipefail

PREFIX=/opt/rmm-agent
VENV=$PREFIX/venv
CONFIG_DIR=/etc/rmm-agent
CONFIG=$CONFIG_DIR/agent.toml
STATE_DIR=/var/lib/rmm-agent
UNIT_PATH=/etc/systemd/system/rmm-agent.service
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

collector_url=""
token_file=""
components=""
kind=""
ca_file=""
command_keys=()
operator_keys=()
offboard_approvals=""
service=yes
package=""
python=python3
start=yes
uninstall=no
purge=no

die() { echo "install-linux.sh: $*" >&2; exit 1; }
say() { echo "==> $*"; }

usage() { sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --collector-url) collector_url=${2:?}; shift 2 ;;
        --token-file) token_file=${2:?}; shift 2 ;;
        --components) components=${2:?}; shift 2 ;;
        --kind) kind=${2:?}; shift 2 ;;
        --ca-file) ca_file=${2:?}; shift 2 ;;
        --command-key) command_keys+=("${2:?}"); shift 2 ;;
        --operator-key) operator_keys+=("${2:?}"); shift 2 ;;
        --offboard-approvals) offboard_approvals=${2:?}; shift 2 ;;
        --no-service) service=no; start=no; shift ;;
        --package) package=${2:?}; shift 2 ;;
        --python) python=${2:?}; shift 2 ;;
        --no-start) start=no; shift ;;
        --uninstall) uninstall=yes; shift ;;
        --purge) purge=yes; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

SYSTEMD_MARKER=${RMM_SYSTEMD_MARKER:-/run/systemd/system}  # sd_booted(3); tests point it away
has_systemd=no
[ -d "$SYSTEMD_MARKER" ] && has_systemd=yes
if [ "$uninstall" = no ] && [ "$service" = yes ] && [ "$has_systemd" = no ]; then
    die "systemd is not the init system on this host, so no rmm-agent.service can be installed.
    Install without a service:  $0 --no-service --collector-url URL --token-file FILE ...
    then start the agent under this host's own supervisor (it runs in the foreground and logs to
    standard error):  $VENV/bin/rmm-agent run --config $CONFIG
    For OpenRC, copy deploy/agent/openrc/rmm-agent to /etc/init.d/ and run
    'rc-update add rmm-agent default'. See \"Without systemd\" in deploy/README.md."
fi
case "$offboard_approvals" in ""|[0-9]|1[0-6]) ;; *) die "--offboard-approvals must be 0 to 16" ;; esac
[ "$(id -u)" -eq 0 ] || die "run as root (sudo)"

if [ "$uninstall" = yes ]; then
    if [ "$has_systemd" = yes ]; then
        say "stopping and removing the service"
        systemctl disable --now rmm-agent.service 2>/dev/null || true
        rm -f "$UNIT_PATH"
        systemctl daemon-reload
    else
        if [ -x /etc/init.d/rmm-agent ] && command -v rc-service >/dev/null; then
            say "stopping and removing the OpenRC service"
            rc-service rmm-agent stop 2>/dev/null || true
            rc-update del rmm-agent default 2>/dev/null || true
            rm -f /etc/init.d/rmm-agent
        else
            say "no systemd here: stop the agent in the supervisor that runs it"
        fi
    fi
    rm -rf "$PREFIX"
    if [ "$purge" = yes ]; then
        say "removing the config and the agent's state (credential and unsent spool)"
        rm -rf "$CONFIG_DIR" "$STATE_DIR"
    else
        say "kept $CONFIG_DIR and $STATE_DIR (use --purge to remove them)"
    fi
    exit 0
fi

case "$kind" in ""|pc|server) ;; *) die "--kind must be pc or server" ;; esac
[ -z "$components" ] || [ -r "$components" ] || die "cannot read $components"
[ -z "$ca_file" ] || [ -r "$ca_file" ] || die "cannot read $ca_file"

if [ -z "$package" ]; then
    # Default: the source tree this script ships in (deploy/agent/ -> the project root).
    package=$(cd "$HERE/../.." && pwd)
    [ -f "$package/pyproject.toml" ] || die "no --package given and $package is not the source tree"
fi

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
    || die "$python is missing or older than Python 3.11 (choose one with --python)"
"$python" -c 'import venv, ensurepip' 2>/dev/null \
    || die "$python lacks venv/ensurepip (Debian/Ubuntu: apt-get install python3-venv)"

umask 077

say "installing the agent into $VENV"
install -d -m 0755 "$PREFIX"
[ -x "$VENV/bin/python" ] || "$python" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input --upgrade pip
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input --upgrade "$package"
install -d -m 0755 "$PREFIX/bin"
# Kept beside the agent: the step that removes it after an offboard (see self_remove).
install -m 0700 "$HERE/install-linux.sh" "$PREFIX/bin/rmm-agent-uninstall"
chmod -R go-w "$PREFIX"
chmod -R go+rX "$PREFIX"

install -d -m 0700 -o root -g root "$CONFIG_DIR"
if [ -n "$collector_url" ]; then
    token=${RMM_ENROLLMENT_TOKEN:-}
    if [ -n "$token_file" ]; then
        if [ "$token_file" = - ]; then
            IFS= read -r token || true
        else
            token=$(head -n 1 "$token_file")
        fi
    fi
    [ -n "$token" ] || die "no enrollment token: give --token-file FILE (or set RMM_ENROLLMENT_TOKEN)"
    if [ -n "$ca_file" ]; then
        install -m 0644 -o root -g root "$ca_file" "$CONFIG_DIR/noc-ca.pem"
        ca_file=$CONFIG_DIR/noc-ca.pem
    fi
    say "writing $CONFIG"
    # The values travel in the environment, never in argv; Python quotes them for TOML.
    RMM_URL=$collector_url RMM_TOKEN=$token RMM_KIND=$kind RMM_CA=$ca_file \
    RMM_STATE=$STATE_DIR RMM_KEYS=$(printf '%s\n' "${command_keys[@]+"${command_keys[@]}"}") \
    RMM_OPERATOR_KEYS=$(printf '%s\n' "${operator_keys[@]+"${operator_keys[@]}"}") \
    RMM_APPROVALS=$offboard_approvals RMM_SYSTEMD=$has_systemd \
    RMM_COMPONENTS=$components RMM_UNINSTALLER=$PREFIX/bin/rmm-agent-uninstall \
        "$VENV/bin/python" - "$CONFIG.new" <<'PY'
import json
import os
import sys

def toml(value):
    return json.dumps(value)  # a JSON string or array of strings is valid TOML

env = os.environ
lines = [
    "# RMM agent configuration; see deploy/README.md.",
    f"collector_url = {toml(env['RMM_URL'])}",
    f"enrollment_token = {toml(env['RMM_TOKEN'])}",
    f"state_dir = {toml(env['RMM_STATE'])}",
    f"command_keys = {toml([k for k in env['RMM_KEYS'].splitlines() if k.strip()])}",
    f"operator_keys = {toml([k for k in env['RMM_OPERATOR_KEYS'].splitlines() if k.strip()])}",
]
if env["RMM_APPROVALS"]:
    lines.append(f"offboard_approvals = {int(env['RMM_APPROVALS'])}")
if env["RMM_CA"]:
    lines.append(f"ca_file = {toml(env['RMM_CA'])}")
if env["RMM_KIND"]:
    lines.append(f"kind = {toml(env['RMM_KIND'])}")
# After a successful offboard the agent starts this, detached, and exits: a transient unit
# outside the agent's own cgroup, so that stopping rmm-agent.service does not kill it.
# Without systemd the agent starts it detached itself (a new session), which outlives it.
remover = [env["RMM_UNINSTALLER"], "--uninstall", "--purge"]
if env["RMM_SYSTEMD"] == "yes":
    remover = ["systemd-run", "--no-block", "--collect", "--unit=rmm-agent-removal", *remover]
lines.append("self_remove = " + toml(remover))
text = "\n".join(lines) + "\n"
if env["RMM_COMPONENTS"]:
    with open(env["RMM_COMPONENTS"], encoding="utf-8") as handle:
        text += "\n" + handle.read()
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w", encoding="utf-8") as handle:
    handle.write(text)
PY
    chown root:root "$CONFIG.new"
    chmod 0600 "$CONFIG.new"
    mv -f "$CONFIG.new" "$CONFIG"
    unset token
elif [ ! -f "$CONFIG" ]; then
    die "no $CONFIG yet: give --collector-url and --token-file for a first install"
fi
chmod 0600 "$CONFIG"
chown root:root "$CONFIG"

# Exit status 78 = configuration error; the message names the key.
set +e
"$VENV/bin/rmm-agent" status --config "$CONFIG" >/dev/null
status=$?
set -e
case $status in
    0) say "already enrolled; keeping the existing credential" ;;
    3)
        say "enrolling with the collector"
        install -d -m 0700 -o root -g root "$STATE_DIR"
        "$VENV/bin/rmm-agent" enroll --config "$CONFIG"
        ;;
    78) die "$CONFIG is not valid (see the message above)" ;;
    *) die "rmm-agent status failed with exit status $status" ;;
esac

if [ "$service" = no ]; then
    say "installed without a service; start it under this host's supervisor:"
    say "  $VENV/bin/rmm-agent run --config $CONFIG"
    say "  (OpenRC: install -m 0755 $HERE/openrc/rmm-agent /etc/init.d/rmm-agent &&"
    say "   rc-update add rmm-agent default && rc-service rmm-agent start)"
    exit 0
fi

say "installing $UNIT_PATH"
install -m 0644 -o root -g root "$HERE/rmm-agent.service" "$UNIT_PATH"
systemctl daemon-reload
if [ "$start" = yes ]; then
    systemctl enable rmm-agent.service
    systemctl restart rmm-agent.service
    say "started; follow it with: journalctl -u rmm-agent -f"
else
    systemctl enable rmm-agent.service
    say "enabled; it starts at the next boot (or: systemctl start rmm-agent)"
fi
