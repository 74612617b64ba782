#!/usr/bin/env bash
# make demo: the product on the built-in VPC simulator.
#
# Starts bin/vpcsim with a data plane (network namespaces of this run only),
# launches two m5.large nodes, runs the warm-pool daemon (vpcchaind) inside
# each node, starts pods with cnitool and the vpcchain .conflist exactly as a
# container runtime does, shows their VPC addresses in EC2, the Calico-style
# host veth names and the per-ENI policy routing, sends traffic pod to pod
# across nodes, deletes the pods, and removes everything on exit, failure or
# interrupt.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/bin}
CNITOOL=${CNITOOL:-$BIN/tools/cnitool}

if [ "$(id -u)" != 0 ]; then
  echo "make demo needs root: it creates network namespaces" >&2
  exit 1
fi
for b in vpcsim vpcchaind vpc-bridge vpc-ipam; do
  [ -x "$BIN/$b" ] || { echo "$BIN/$b missing: run make build" >&2; exit 1; }
done
[ -x "$CNITOOL" ] || { echo "$CNITOOL missing: run make tools" >&2; exit 1; }

work=$(mktemp -d)
simpid=
daemons=()
pods=()
cleanup() {
  set +e
  for p in "${pods[@]}"; do ip netns del "$p" 2>/dev/null; done
  for pid in "${daemons[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${daemons[@]}"; do wait "$pid" 2>/dev/null; done
  if [ -n "$simpid" ] && kill -0 "$simpid" 2>/dev/null; then
    kill -TERM "$simpid"
    wait "$simpid" 2>/dev/null
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

current=start
step() { current=$*; printf '\n\033[1m== %s\033[0m\n' "$*"; }
trap 'echo "demo FAILED in step \"$current\" (line $LINENO); daemon logs are kept in the output above" >&2' ERR

step "1. A VPC (10.0.0.0/16, subnet 10.0.0.0/20) and two m5.large nodes in the simulator"
"$BIN/vpcsim" -dataplane -vpc-cidrs 10.0.0.0/16 -subnets '10.0.0.0/20@us-west-2a' \
  -nodes a:m5.large,b:m5.large -internet-echo 198.51.100.10:80 >"$work/sim.json" 2>"$work/sim.err" &
simpid=$!
for _ in $(seq 100); do
  [ -s "$work/sim.json" ] && break
  kill -0 "$simpid" 2>/dev/null || { cat "$work/sim.err" >&2; exit 1; }
  sleep 0.1
done
[ -s "$work/sim.json" ] || { echo "simulator did not start" >&2; exit 1; }
run=$(jq -r .runId "$work/sim.json")
ec2=$(jq -r .ec2 "$work/sim.json")
state() { curl -sf "$ec2/sim/state"; }
nodens() { jq -r ".nodes.$1.NetNS" "$work/sim.json"; }
for n in a b; do
  echo "node $n: $(jq -r ".nodes.$n.InstanceID" "$work/sim.json"), namespace $(nodens "$n")"
done

step "2. The warm-pool daemon starts inside each node (IMDS, EC2, ENIs, then serves)"
for n in a b; do
  mkdir -p "$work/$n/net.d"
  # The chain users drop into /etc/cni/net.d (socket per node for the demo).
  jq -n --arg sock "$work/$n/ipamd.sock" --arg snat "$work/$n/snat.json" '{cniVersion: "1.1.0", name: "vpcchain", plugins: [
      {type: "vpc-bridge", vethPrefix: "eni", mtu: 9001, ipam: {type: "vpc-ipam", socket: $sock}},
      {type: "vpc-snat", nodeConfig: $snat}]}' \
    >"$work/$n/net.d/10-vpcchain.conflist"
  # No AWS keys: the SDK takes the instance role's temporary credentials
  # from IMDS, as on EC2.
  ip netns exec "$(nodens "$n")" env -i PATH="$PATH" \
    AWS_REGION=us-west-2 \
    AWS_ENDPOINT_URL_EC2=http://169.254.169.10 AWS_EC2_METADATA_SERVICE_ENDPOINT=http://169.254.169.254 \
    VPCCHAIN_STATE_DIR="$work/$n" VPCCHAIN_SOCKET="$work/$n/ipamd.sock" VPCCHAIN_CRI_SOCKET=none \
    "$BIN/vpcchaind" >"$work/$n/daemon.log" 2>&1 &
  daemons+=($!)
done
for n in a b; do
  for _ in $(seq 200); do
    [ -S "$work/$n/ipamd.sock" ] && grep -q "pool: " "$work/$n/daemon.log" && break
    sleep 0.1
  done
  [ -S "$work/$n/ipamd.sock" ] || { cat "$work/$n/daemon.log" >&2; exit 1; }
  echo "-- node $n:"
  sed -E 's/^time=[^ ]+ level=([A-Z]+) msg=/   \1 /' "$work/$n/daemon.log" | head -4
done
echo
echo "the conflist (node a):"
jq . "$work/a/net.d/10-vpcchain.conflist"

# add_pod NODE NAME: a sandbox netns, then cnitool ADD in the node.
add_pod() {
  local node=$1 name=$2 pns="vd$run-$1-$2"
  ip netns add "$pns"
  pods+=("$pns")
  local out tries=0
  # A runtime retries a failed ADD (e.g. code 11 while the pool is still
  # growing) after cleaning up with DEL; so does the demo.
  until out=$(ip netns exec "$(nodens "$node")" env CNI_PATH="$BIN" NETCONFPATH="$work/$node/net.d" \
    CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=$name" \
    "$CNITOOL" add vpcchain "/var/run/netns/$pns" 2>"$work/add.err"); do
    tries=$((tries + 1))
    if [ "$tries" -ge 50 ]; then cat "$work/add.err" >&2; return 1; fi
    echo "  ($name: $(jq -r .msg "$work/add.err" 2>/dev/null || cat "$work/add.err"); retrying)"
    del_pod "$node" "$name" || true
    sleep 0.3
  done
  local ip veth want
  ip=$(jq -r '.ips[0].address' <<<"$out" | cut -d/ -f1)
  veth=$(jq -r '.interfaces[0].name' <<<"$out")
  want=eni$(printf '%s' "default.$name" | sha1sum | cut -c1-11)
  printf '  %-22s node %s  %-12s host veth %s %s\n' "default/$name" "$node" "$ip" "$veth" \
    "$([ "$veth" = "$want" ] && echo "(= eni + sha1(\"default.$name\")[:11], Calico's rule)")"
  echo "$ip" >"$work/ip-$name"
}
del_pod() {
  local node=$1 name=$2 pns="vd$run-$1-$2"
  ip netns exec "$(nodens "$node")" env CNI_PATH="$BIN" NETCONFPATH="$work/$node/net.d" \
    CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=$name" \
    "$CNITOOL" del vpcchain "/var/run/netns/$pns"
}
podip() { cat "$work/ip-$1"; }

step "3. Pods start with cnitool and the .conflist, as a runtime runs them (10 on a, 2 on b)"
for i in $(seq 1 10); do add_pod a "web-$i"; done
for i in 1 2; do add_pod b "db-$i"; done

step "4. EC2's view: every pod address is a secondary IP of an ENI of its node"
state | jq -r --slurpfile sim "$work/sim.json" '
  ($sim[0].nodes | to_entries | map({(.value.InstanceID): .key}) | add) as $names
  | .enis[] | select(.InstanceID != "")
  | "  node \($names[.InstanceID]) device \(.DeviceIndex) \(.ID): primary \(.PrimaryIP), secondary \((.Secondary // []) | join(" "))"'

echo "  each pod's address and ENI:"
for f in $(printf "%s\n" "$work"/ip-* | sort -V); do
  name=${f##*/ip-}
  state | jq -r --arg ip "$(cat "$f")" --arg pod "$name" --slurpfile sim "$work/sim.json" '
    ($sim[0].nodes | to_entries | map({(.value.InstanceID): .key}) | add) as $names
    | .enis[] | select((.Secondary // []) | index($ip))
    | "    \($pod): \($ip) on \(.ID) (node \($names[.InstanceID]), device \(.DeviceIndex))"'
done

step "5. Node a: the host veth carries no address; pods on a secondary ENI have from-pod rules"
ip netns exec "$(nodens a)" ip -br addr show | grep '^eni' | head -3 | sed 's/^/  /'
echo "  ..."
ip netns exec "$(nodens a)" ip rule show | grep -E '^(512|1536|32765):' | sed 's/^/  /'
for t in $(ip netns exec "$(nodens a)" ip rule show | awk '$1 == "32765:" {print $NF}' | sort -u); do
  echo "  table $t:"
  ip netns exec "$(nodens a)" ip route show table "$t" | sed 's/^/    /'
done

step "6. Traffic through the VPC router (which drops any packet leaving by the wrong ENI)"
ping_from() { # POD-NS DEST LABEL
  if ip netns exec "$1" ping -c 1 -W 2 "$2" >/dev/null; then echo "  ok    $3"; else echo "  FAIL  $3"; return 1; fi
}
ping_from "vd$run-a-web-1" "$(podip db-1)" "web-1 ($(podip web-1)) -> db-1 ($(podip db-1)), across nodes"
ping_from "vd$run-a-web-10" "$(podip db-2)" "web-10 ($(podip web-10)) -> db-2 ($(podip db-2)), across nodes"
ping_from "vd$run-a-web-1" "$(podip web-10)" "web-1 -> web-10, same node"
ping_from "vd$run-b-db-1" "$(podip web-10)" "db-1 -> web-10, across nodes"
nodeip_a=$(state | jq -r --arg id "$(jq -r .nodes.a.InstanceID "$work/sim.json")" '.enis[] | select(.InstanceID == $id and .DeviceIndex == 0) | .PrimaryIP')
internet_from() { # POD LABEL: an HTTP request to a web site on the internet that reports our source
  local seen
  seen=$(ip netns exec "vd$run-a-$1" curl -sf --max-time 5 http://198.51.100.10/) || { echo "  FAIL  $2: no answer"; return 1; }
  if [ "${seen%:*}" = "$nodeip_a" ]; then echo "  ok    $2: the internet sees $seen (node a's primary IP, SNAT)";
  else echo "  FAIL  $2: the internet sees $seen, not node a's $nodeip_a"; return 1; fi
}
internet_from web-1 "web-1 (primary ENI) -> http://198.51.100.10"
internet_from web-10 "web-10 (secondary ENI) -> http://198.51.100.10, out of the primary ENI by connmark"
echo "  node a's SNAT rule (one rule for all pods, which are ipset entries):"
ip netns exec "$(nodens a)" iptables -t nat -S VPCCHAIN-SNAT | grep -- '-A' | sed 's/^/    /'
ping_from "vd$run-a-web-1" "$nodeip_a" "web-1 -> its node ($nodeip_a)"

if [ -x "$BIN/vpcctl" ]; then
  step "The pool of node a (vpcctl status)"
  "$BIN/vpcctl" status --socket "$work/a/ipamd.sock" | sed 's/^/  /'
  echo "  Prometheus metrics of node a's daemon (127.0.0.1:61678/metrics inside the node):"
  ip netns exec "$(nodens a)" curl -sf http://127.0.0.1:61678/metrics |
    grep -E '^vpcchain_(pool_addresses|enis|ec2_requests_total)' | sed 's/^/    /'
fi

step "7. Pods are deleted: veths, routes and rules go; the addresses cool down in the pool"
for i in $(seq 1 10); do del_pod a "web-$i"; done
for i in 1 2; do del_pod b "db-$i"; done
echo "  host veths left on node a: $(ip netns exec "$(nodens a)" ip -br link show | grep -c '^eni' || true)"
echo "  pod rules left on node a:  $(ip netns exec "$(nodens a)" ip rule show | grep -cE '^(512|1536):' || true)"
echo "  EC2 API calls by both daemons: $(state | jq -r '.calls | "\(.[""]) in all: " + (del(.[""]) | to_entries | map("\(.key) \(.value)") | join(", "))')"

step "8. Stopping: daemons, simulator, every namespace of run $run"
cleanup
trap - EXIT
left=$(ip netns list | grep -cE "^(vs|vd)$run-" || true)
echo "  namespaces of this run left: $left"
[ "$left" = 0 ]
