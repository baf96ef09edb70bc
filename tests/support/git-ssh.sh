#!/usr/bin/env bash
# Serves Git over SSH: OpenSSH's sshd on a free loopback port, with a generated host key
# and one generated client key allowed in, for the current user. Repositories are
# addressed by absolute path (ssh://USER@127.0.0.1:PORT/abs/path.git).
#
#   tests/support/git-ssh.sh start DIR
#
# Writes DIR/env (SSH_PORT, SSH_USER, SSH_KEY: the client's private key file,
# SSH_KNOWN_HOSTS: a known_hosts line for the server), prints `ready`, and stops sshd when
# its standard input closes (same contract as control-plane.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

cmd=${1:-}
dir=${2:-}
[ "$cmd" = start ] && [ -n "$dir" ] || { echo "usage: $0 start DIR" >&2; exit 2; }
sshd=$(command -v sshd || echo /usr/sbin/sshd)
[ -x "$sshd" ] || { echo "sshd is missing: apt-get install openssh-server (make test does)" >&2; exit 1; }
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
chmod 700 "$dir"

port=$(free_port)
ssh-keygen -q -t ed25519 -N '' -C pontoon-test-host -f "$dir/host_key"
ssh-keygen -q -t ed25519 -N '' -C pontoon-test-client -f "$dir/client_key"
cp "$dir/client_key.pub" "$dir/authorized_keys"
chmod 600 "$dir/authorized_keys"
# sshd wants its privilege separation directory when it runs as root.
[ "$(id -u)" != 0 ] || mkdir -p /run/sshd

cat > "$dir/sshd_config" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $dir/host_key
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
LogLevel ERROR
EOF

pid=
stop() {
  # Ignore further signals rather than die halfway: a group-wide SIGTERM is often followed
  # by the caller's own, and a server left unkilled outlives us.
  trap - EXIT
  trap '' INT TERM
  stop_pid "$pid"
  [ "${PONTOON_SSH_CLEANUP:-}" = 1 ] && rm -rf "$dir"
  return 0
}
trap stop EXIT
trap 'exit 0' INT TERM

"$sshd" -D -e -f "$dir/sshd_config" </dev/null >"$dir/sshd.log" 2>&1 &
pid=$!
for i in $(seq 100); do
  (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { echo "sshd exited; log in $dir" >&2; tail -n 20 "$dir/sshd.log" >&2; exit 1; }
  [ "$i" -lt 100 ] || { echo "sshd not listening after 20s" >&2; exit 1; }
  sleep 0.2
done

cat > "$dir/env" <<EOF
SSH_PORT=$port
SSH_USER=$(id -un)
SSH_KEY=$dir/client_key
SSH_KNOWN_HOSTS=[127.0.0.1]:$port $(cut -d' ' -f1,2 "$dir/host_key.pub")
EOF
echo ready
while IFS= read -r _; do :; done
