#!/bin/sh
# Runs a command inside a private network namespace with loopback and one veth pair
# (10.77.0.1), so WebRTC's ICE checks and mDNS never reach the machine's real interfaces.
# Unprivileged: `unshare -r` maps the caller to root inside a new user namespace.
#   scripts/in-netns.sh <command> [args...]
# The same setup as lab/src/netns.rs (which re-executes Rust test binaries).
set -e
exec unshare -rn sh -c '
set -e
ip link set lo up
ip link add v0 type veth peer name v1
ip addr add 10.77.0.1/24 dev v0
ip link set v0 up
ip link set v1 up
ip route add default dev v0
export CHORD_KV_PRIVATE_NETNS_SHELL=1
exec "$@"' sh "$@"
