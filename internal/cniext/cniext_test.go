package cniext

import (
	"bytes"
	"encoding/json"
	"net"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	types040 "github.com/containernetworking/cni/pkg/types/040"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/vpcchain/vpcchain/internal/routing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name      string
		raw       string
		wantIP    string
		wantExt   *Ext
		wantTable int
		wantErr   string
	}{
		{
			name:      "vpc-ipam with secondary ENI",
			raw:       `{"cniVersion":"1.1.0","ips":[{"address":"10.0.1.23/24","gateway":"10.0.1.1"}],"vpcchain":{"routeTable":3,"eniID":"eni-0abc","deviceNumber":2}}`,
			wantIP:    "10.0.1.23/24",
			wantExt:   &Ext{RouteTable: 3, ENIID: "eni-0abc", DeviceNumber: 2},
			wantTable: 3,
		},
		{
			name:      "vpc-ipam primary ENI",
			raw:       `{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.9/24"}],"vpcchain":{"routeTable":254,"eniID":"eni-1","deviceNumber":0}}`,
			wantIP:    "10.0.0.9/24",
			wantExt:   &Ext{RouteTable: 254, ENIID: "eni-1"},
			wantTable: routing.MainTable,
		},
		{
			name:      "routeTable 0 means main",
			raw:       `{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.9/24"}],"vpcchain":{"routeTable":0}}`,
			wantIP:    "10.0.0.9/24",
			wantExt:   &Ext{},
			wantTable: routing.MainTable,
		},
		{
			name:      "host-local style, no extension",
			raw:       `{"cniVersion":"1.0.0","ips":[{"address":"10.22.0.2/16","gateway":"10.22.0.1"}],"dns":{}}`,
			wantIP:    "10.22.0.2/16",
			wantTable: routing.MainTable,
		},
		{
			name:      "null extension",
			raw:       `{"cniVersion":"1.0.0","ips":[{"address":"10.22.0.2/16"}],"vpcchain":null}`,
			wantIP:    "10.22.0.2/16",
			wantTable: routing.MainTable,
		},
		{
			name:      "0.4.0 result is converted",
			raw:       `{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.1.0.5/32"}],"vpcchain":{"routeTable":2}}`,
			wantIP:    "10.1.0.5/32",
			wantExt:   &Ext{RouteTable: 2},
			wantTable: 2,
		},
		{
			name:      "0.3.1 result is converted",
			raw:       `{"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.1.0.6/32"}]}`,
			wantIP:    "10.1.0.6/32",
			wantTable: routing.MainTable,
		},
		{name: "not JSON", raw: `{"cniVersion":`, wantErr: "cannot decode IPAM result"},
		{name: "unknown version", raw: `{"cniVersion":"9.9.9","ips":[]}`, wantErr: "cannot decode IPAM result"},
		{name: "extension wrong type", raw: `{"cniVersion":"1.0.0","ips":[],"vpcchain":{"routeTable":"three"}}`, wantErr: `cannot decode "vpcchain" extension`},
		{name: "local table", raw: `{"cniVersion":"1.0.0","ips":[],"vpcchain":{"routeTable":255}}`, wantErr: "vpcchain.routeTable 255 is a reserved kernel table"},
		{name: "default table", raw: `{"cniVersion":"1.0.0","ips":[],"vpcchain":{"routeTable":253}}`, wantErr: "vpcchain.routeTable 253 is a reserved kernel table"},
		{name: "negative table", raw: `{"cniVersion":"1.0.0","ips":[],"vpcchain":{"routeTable":-1}}`, wantErr: "vpcchain.routeTable -1 is out of range"},
		{name: "table too large", raw: `{"cniVersion":"1.0.0","ips":[],"vpcchain":{"routeTable":4294967296}}`, wantErr: "out of range"},
		{name: "bad eni ID", raw: `{"cniVersion":"1.0.0","ips":[],"vpcchain":{"routeTable":3,"eniID":"i-123"}}`, wantErr: `vpcchain.eniID "i-123" is not an ENI ID`},
		{name: "negative device", raw: `{"cniVersion":"1.0.0","ips":[],"vpcchain":{"routeTable":3,"deviceNumber":-2}}`, wantErr: "vpcchain.deviceNumber -2 is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, ext, err := Parse([]byte(tt.raw))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse error = %v, want containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if len(res.IPs) != 1 || res.IPs[0].Address.String() != tt.wantIP {
				t.Fatalf("IPs = %v, want [%s]", res.IPs, tt.wantIP)
			}
			if res.CNIVersion != types100.ImplementedSpecVersion {
				t.Errorf("result version %q, want %q", res.CNIVersion, types100.ImplementedSpecVersion)
			}
			if (ext == nil) != (tt.wantExt == nil) || (ext != nil && *ext != *tt.wantExt) {
				t.Fatalf("ext = %+v, want %+v", ext, tt.wantExt)
			}
			if got := ext.Table(); got != tt.wantTable {
				t.Fatalf("Table() = %d, want %d", got, tt.wantTable)
			}
			if ext.UsesMainTable() != (tt.wantTable == routing.MainTable) {
				t.Fatalf("UsesMainTable() = %v for table %d", ext.UsesMainTable(), tt.wantTable)
			}
		})
	}
}

func testResult() *types100.Result {
	_, ipn, _ := net.ParseCIDR("10.0.1.23/24")
	ipn.IP = net.ParseIP("10.0.1.23").To4()
	return &types100.Result{
		CNIVersion: "1.1.0",
		IPs:        []*types100.IPConfig{{Address: *ipn, Gateway: net.ParseIP("10.0.1.1")}},
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		ext  *Ext
	}{
		{"with extension", &Ext{RouteTable: 3, ENIID: "eni-0abc", DeviceNumber: 2}},
		{"main table", &Ext{RouteTable: 254, ENIID: "eni-0def"}},
		{"no extension", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := Marshal(testResult(), tt.ext)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			var top map[string]json.RawMessage
			if err := json.Unmarshal(data, &top); err != nil {
				t.Fatalf("output is not a JSON object: %v", err)
			}
			if _, has := top[Key]; has != (tt.ext != nil) {
				t.Fatalf("key %q present=%v in %s", Key, has, data)
			}
			res, ext, err := Parse(data)
			if err != nil {
				t.Fatalf("Parse(Marshal()): %v", err)
			}
			if res.IPs[0].Address.String() != "10.0.1.23/24" || !res.IPs[0].Gateway.Equal(net.ParseIP("10.0.1.1")) {
				t.Fatalf("round trip lost the IP config: %s", data)
			}
			if (ext == nil) != (tt.ext == nil) || (ext != nil && *ext != *tt.ext) {
				t.Fatalf("ext = %+v, want %+v", ext, tt.ext)
			}
		})
	}
}

func TestMarshalStandardParsersIgnoreExtension(t *testing.T) {
	data, err := Marshal(testResult(), &Ext{RouteTable: 3})
	if err != nil {
		t.Fatal(err)
	}
	// The generic CNI decoder (what libcni and ipam.ExecAdd use) must still accept it.
	var r types100.Result
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatalf("types100 decode: %v", err)
	}
	if len(r.IPs) != 1 {
		t.Fatalf("types100 decode lost IPs: %s", data)
	}
}

func TestMarshalErrors(t *testing.T) {
	if _, err := Marshal(nil, nil); err == nil {
		t.Fatalf("Marshal(nil) succeeded")
	}
	if _, err := Marshal(testResult(), &Ext{RouteTable: 255}); err == nil || !strings.Contains(err.Error(), "reserved") {
		t.Fatalf("Marshal with local table: %v", err)
	}
}

func TestWriteResultConvertsVersion(t *testing.T) {
	var buf bytes.Buffer
	var res types.Result = testResult()
	if err := WriteResult(&buf, res, &Ext{RouteTable: 7}, "0.4.0"); err != nil {
		t.Fatalf("WriteResult: %v", err)
	}
	var old types040.Result
	if err := json.Unmarshal(buf.Bytes(), &old); err != nil {
		t.Fatal(err)
	}
	if old.CNIVersion != "0.4.0" || len(old.IPs) != 1 {
		t.Fatalf("not a 0.4.0 result: %s", buf.String())
	}
	_, ext, err := Parse(buf.Bytes())
	if err != nil || ext == nil || ext.RouteTable != 7 {
		t.Fatalf("Parse = %+v, %v", ext, err)
	}
}

func TestParseBranch(t *testing.T) {
	const ok = `{"cniVersion":"1.1.0","ips":[{"address":"10.0.1.77/32","gateway":"169.254.1.1"}],` +
		`"vpcchain":{"routeTable":0,"eniID":"eni-0b1","deviceNumber":0,"branch":{"eniID":"eni-0b1","mac":"02:00:00:00:00:b1",` +
		`"vlanID":7,"subnetGateway":"10.0.1.1","trunkENIID":"eni-0t1","trunkMAC":"02:00:00:00:00:01"}}}`
	_, ext, err := Parse([]byte(ok))
	if err != nil {
		t.Fatal(err)
	}
	if b := ext.Branch; b == nil || b.VLANID != 7 || b.MAC != "02:00:00:00:00:b1" || b.TrunkMAC != "02:00:00:00:00:01" || b.SubnetGateway != "10.0.1.1" {
		t.Errorf("branch = %+v", ext.Branch)
	}
	bad := strings.Replace(ok, `"vlanID":7`, `"vlanID":0`, 1)
	if _, _, err := Parse([]byte(bad)); err == nil || !strings.Contains(err.Error(), "vlanID 0") {
		t.Errorf("Parse with VLAN 0: %v, want the VLAN id refused", err)
	}
	// A result without a branch has none.
	if _, ext, err := Parse([]byte(`{"cniVersion":"1.1.0","ips":[{"address":"10.0.1.5/32"}],"vpcchain":{"routeTable":1002}}`)); err != nil || ext.Branch != nil {
		t.Errorf("Parse without a branch: %+v, %v", ext, err)
	}
}
