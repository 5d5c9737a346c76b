#!/bin/sh
# A loopback sshd that plays an ARM board for the ssh device (CI and tests/test_ssh_device.py).
#
#   .ci/sshd.sh start STATE_DIR [PORT]        start in the background (pid in STATE_DIR/sshd.pid)
#   .ci/sshd.sh foreground STATE_DIR [PORT]   exec sshd -D (a test fixture owns the process)
#   .ci/sshd.sh stop STATE_DIR                stop the background sshd
#
# Its own host key, client key, config and known_hosts live in STATE_DIR; key-only login,
# 127.0.0.1 only. Every login runs STATE_DIR/login.sh: when the qemu-aarch64 device is built
# (albert-edge device setup qemu-aarch64) python3 and uname there are the emulated arm64 ones,
# so `uname -m` says aarch64; otherwise (or with ALBERT_EDGE_SSHD_LOGIN=native) they are native.
# Then use:  ALBERT_EDGE_SSH_CONFIG=STATE_DIR/ssh_config  --device ssh://$USER@127.0.0.1:PORT
set -eu

action=${1:?usage: sshd.sh start|foreground|stop STATE_DIR [PORT]}
state=${2:?usage: sshd.sh start|foreground|stop STATE_DIR [PORT]}
port=${3:-2222}
case $port in *[!0-9]*|'') echo "sshd.sh: port must be a number" >&2; exit 2 ;; esac

mkdir -p "$state"
chmod 700 "$state"
state=$(CDPATH= cd -- "$state" && pwd -P)

if [ "$action" = stop ]; then
    if [ -f "$state/sshd.pid" ]; then
        kill "$(cat "$state/sshd.pid")" 2>/dev/null || true
        rm -f "$state/sshd.pid"
    fi
    exit 0
fi

sshd_bin=/usr/sbin/sshd
[ -x "$sshd_bin" ] || { echo "sshd.sh: $sshd_bin missing: apt-get install openssh-server" >&2; exit 2; }
user=$(id -un)

# Keys: generated once per state dir.
[ -f "$state/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C albert-edge-loopback-host -f "$state/host_ed25519"
[ -f "$state/client_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C albert-edge-loopback-client -f "$state/client_ed25519"
cp "$state/client_ed25519.pub" "$state/authorized_keys"
# The client checks the host key strictly against this file.
printf '[127.0.0.1]:%s %s\n' "$port" "$(cut -d' ' -f1,2 "$state/host_ed25519.pub")" > "$state/known_hosts"

# Which "device" the login runs on.
cache=${ALBERT_EDGE_DEVICE_CACHE:-$HOME/.cache/albert-edge}
qroot="$cache/qemu-aarch64"
mode=native
if [ "${ALBERT_EDGE_SSHD_LOGIN:-auto}" != native ] && [ -x "$qroot/bin/python3" ] && [ -f "$qroot/stamp.json" ]; then
    mode=qemu
fi
{
    echo '#!/bin/sh'
    echo '# ForceCommand of the loopback sshd (written by .ci/sshd.sh): runs the login command on the "device".'
    if [ "$mode" = qemu ]; then
        printf 'PATH=%s/bin:/usr/bin:/bin\nexport PATH ALBERT_EDGE_EMULATED=qemu-user\n' "$qroot"
    fi
    echo 'cd "$HOME" 2>/dev/null || cd /'
    echo 'if [ -z "${SSH_ORIGINAL_COMMAND:-}" ]; then exec /bin/sh -i; fi'
    echo 'exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"'
} > "$state/login.sh"
chmod 755 "$state/login.sh"
echo "$mode" > "$state/mode"

cat > "$state/sshd_config" <<EOF
# Loopback test sshd for albert-edge (written by .ci/sshd.sh)
Port $port
ListenAddress 127.0.0.1
HostKey $state/host_ed25519
PidFile $state/sshd.pid
AuthorizedKeysFile $state/authorized_keys
AllowUsers $user
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
# the state dir sits under /tmp, whose mode (1777) StrictModes rejects
StrictModes no
AllowTcpForwarding no
AllowAgentForwarding no
X11Forwarding no
PermitUserEnvironment no
ForceCommand $state/login.sh
LogLevel INFO
EOF

cat > "$state/ssh_config" <<EOF
Host 127.0.0.1
    Port $port
    User $user
    IdentityFile $state/client_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile $state/known_hosts
    StrictHostKeyChecking yes
    BatchMode yes
EOF

# Privilege separation needs /run/sshd when sshd runs as root.
if [ "$(id -u)" = 0 ]; then mkdir -p /run/sshd && chmod 755 /run/sshd; fi
"$sshd_bin" -t -f "$state/sshd_config"

case $action in
    foreground) exec "$sshd_bin" -D -e -f "$state/sshd_config" ;;
    start)
        "$sshd_bin" -f "$state/sshd_config" -E "$state/sshd.log"
        echo "loopback sshd ($mode login) on 127.0.0.1:$port; use: ALBERT_EDGE_SSH_CONFIG=$state/ssh_config --device ssh://$user@127.0.0.1:$port"
        ;;
    *) echo "sshd.sh: unknown action $action" >&2; exit 2 ;;
esac
