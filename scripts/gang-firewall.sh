#!/usr/bin/env bash
# The firewall of a GPU node that runs multi-node jobs (docs/deployment.md, "Multi-node
# network"): on the interface between the GPU nodes, new TCP connections to unprivileged
# ports (rank 0's rendezvous store at GAD_GANG_PORT_BASE.., gloo's and NCCL's own
# listeners on ephemeral ports) are accepted from the GPU nodes only. torchrun's store
# has no authentication and unpickles what it is sent: whoever can connect to it can run
# code in the job.
#
#   scripts/gang-firewall.sh IFACE NODE_ADDR [NODE_ADDR...] | nft -f -
#
# Prints an nftables ruleset (its own table, `inet gad_gang`, replaced whole each time);
# nothing else on the node is changed. Run it again when the set of GPU nodes changes.
set -euo pipefail
if [ "$#" -lt 2 ]; then
  echo "usage: $0 IFACE NODE_ADDR [NODE_ADDR...]  (the GPU nodes' addresses, this one's too)" >&2
  exit 2
fi
iface=$1
shift
for addr in "$@"; do
  if ! [[ $addr =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}(/[0-9]{1,2})?$ ]]; then
    echo "$0: $addr is not an IPv4 address or prefix" >&2
    exit 2
  fi
done
nodes=$(IFS=,; echo "$*")
cat <<RULES
table inet gad_gang
delete table inet gad_gang
table inet gad_gang {
  set gpu_nodes {
    type ipv4_addr
    flags interval
    elements = { $nodes }
  }
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "$iface" ct state established,related accept
    iifname "$iface" ip saddr @gpu_nodes accept
    iifname "$iface" meta l4proto tcp th dport 1024-65535 ct state new drop
  }
}
RULES
