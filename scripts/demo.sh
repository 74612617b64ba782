#!/usr/bin/env bash
# make demo: a tour of the VPC simulator the product runs on without AWS.
# Starts bin/vpcsim with a data plane (network namespaces of this run only),
# launches two m5.large nodes, reads IMDSv2 from inside a node, sends traffic
# node to node and node to the "internet" through the VPC router, and tears
# everything down on exit, failure or interrupt.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/bin}

if [ "$(id -u)" != 0 ]; then
  echo "make demo needs root: it creates network namespaces" >&2
  exit 1
fi

work=$(mktemp -d)
simpid=
cleanup() {
  if [ -n "$simpid" ] && kill -0 "$simpid" 2>/dev/null; then
    kill -TERM "$simpid" 2>/dev/null || true
    wait "$simpid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Starting the VPC simulator (VPC 10.0.0.0/16, two m5.large nodes)"
"$BIN/vpcsim" -dataplane -vpc-cidrs 10.0.0.0/16 -subnets '10.0.0.0/20@us-west-2a' \
  -nodes a:m5.large,b:m5.large >"$work/sim.json" 2>"$work/sim.err" &
simpid=$!
for _ in $(seq 100); do
  [ -s "$work/sim.json" ] && break
  kill -0 "$simpid" 2>/dev/null || { cat "$work/sim.err" >&2; exit 1; }
  sleep 0.1
done
[ -s "$work/sim.json" ] || { echo "simulator did not start" >&2; exit 1; }
jq . "$work/sim.json"
run=$(jq -r .runId "$work/sim.json")
nsa=$(jq -r .nodes.a.NetNS "$work/sim.json")
nsb=$(jq -r .nodes.b.NetNS "$work/sim.json")
in_a() { ip netns exec "$nsa" "$@"; }

step "IMDSv2 from inside node a (token PUT, then GETs)"
tok=$(in_a curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' http://169.254.169.254/latest/api/token)
md() { in_a curl -sf -H "X-aws-ec2-metadata-token: $tok" "http://169.254.169.254/latest/meta-data/$1"; }
echo "instance-id:   $(md instance-id)"
echo "instance-type: $(md instance-type)"
ipa=$(md local-ipv4)
mac=$(md mac)
echo "local-ipv4:    $ipa"
echo "mac:           $mac"
echo "subnet:        $(md "network/interfaces/macs/$mac/subnet-ipv4-cidr-block")"
echo "without a token IMDS answers: $(in_a curl -s -o /dev/null -w '%{http_code}' http://169.254.169.254/latest/meta-data/instance-id)"

step "Node a's primary ENI is a link with the ENI's MAC"
in_a ip -br link show | grep -v '^lo'
in_a ip -br addr show | grep -v '^lo'

ipb=$(ip netns exec "$nsb" ip -4 -o addr show | awk '$2 != "lo" {split($4, a, "/"); print a[1]; exit}')
step "Node a -> node b ($ipb) through the VPC router"
in_a ping -c 2 -W 2 "$ipb"

step "Node a -> the internet (198.51.100.10, a documentation address in the outside namespace)"
in_a ping -c 2 -W 2 198.51.100.10

step "EC2 Query API (the endpoint the SDK uses): DescribeNetworkInterfaces"
ec2=$(jq -r .ec2 "$work/sim.json")
curl -sf --aws-sigv4 'aws:amz:us-west-2:ec2' --user demo:demo "$ec2/" -d 'Action=DescribeNetworkInterfaces&Version=2016-11-15' |
  grep -oE '<(networkInterfaceId|privateIpAddress|macAddress)>[^<]+' | sed 's/</  /; s/>/: /' | sort -u

step "Stopping the simulator: every namespace of run $run is removed"
kill -TERM "$simpid"; wait "$simpid" 2>/dev/null || true; simpid=
left=$(ip netns list | grep -c "^vs$run-" || true)
echo "namespaces of this run left: $left"
[ "$left" = 0 ]
