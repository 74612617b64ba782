package main

// FaultEnv names the step of ADD that fails in a -tags vpcbridge_faultinject
// build (veth, pod, route, rules, result); production builds ignore it.
const FaultEnv = "VPC_BRIDGE_FAULT"
