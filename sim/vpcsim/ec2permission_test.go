package vpcsim

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// CreateNetworkInterfacePermission as EC2's API reference gives it, through
// the SDK: the permission on an ENI that exists, granted to the caller's
// account unless another is named; EC2's codes for the rest.
func TestCreateNetworkInterfacePermission(t *testing.T) {
	r := newRegion(t, "10.0.26.0/24", Options{})
	ctx := context.Background()
	branch := r.createENI(t, r.subnet, "branch")
	for _, tc := range []struct {
		name       string
		eni        string
		permission types.InterfacePermissionType
		account    string
		wantCode   string
	}{
		{name: "instance attach, the caller's account", eni: branch, permission: types.InterfacePermissionTypeInstanceAttach},
		{name: "another account", eni: branch, permission: types.InterfacePermissionTypeEipAssociate, account: "210987654321"},
		{name: "unknown ENI", eni: "eni-0123456789abcdef0", permission: types.InterfacePermissionTypeInstanceAttach, wantCode: "InvalidNetworkInterfaceID.NotFound"},
		{name: "malformed ENI", eni: "eni-xyz", permission: types.InterfacePermissionTypeInstanceAttach, wantCode: "InvalidNetworkInterfaceId.Malformed"},
		{name: "unknown permission", eni: branch, permission: "DETACH", wantCode: "InvalidParameterValue"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := &ec2.CreateNetworkInterfacePermissionInput{NetworkInterfaceId: aws.String(tc.eni), Permission: tc.permission}
			if tc.account != "" {
				in.AwsAccountId = aws.String(tc.account)
			}
			out, err := r.ec2.CreateNetworkInterfacePermission(ctx, in)
			if tc.wantCode != "" {
				if apiCode(err) != tc.wantCode {
					t.Fatalf("got %v, want %s", err, tc.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			p := out.InterfacePermission
			want := tc.account
			if want == "" {
				want = "123456789012" // the simulator's one account
			}
			if aws.ToString(p.NetworkInterfaceId) != tc.eni || aws.ToString(p.AwsAccountId) != want || p.Permission != tc.permission ||
				p.PermissionState == nil || p.PermissionState.State != types.NetworkInterfacePermissionStateCodeGranted ||
				!wellFormed(aws.ToString(p.NetworkInterfacePermissionId), "eni-perm") {
				t.Fatalf("permission %+v (state %+v)", p, p.PermissionState)
			}
		})
	}
	if n := len(r.sim.Cloud.InterfacePermissions(branch)); n != 2 {
		t.Errorf("%d permissions on %s, want the 2 granted", n, branch)
	}
}
