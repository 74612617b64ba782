package vpcipam

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

func TestParseConfig(t *testing.T) {
	const head = `{"cniVersion":"1.1.0","name":"vpcchain","type":"vpc-bridge","vethPrefix":"eni","mtu":9001`
	long := "/" + strings.Repeat("x", 107) // 108 bytes
	// The defaults: the daemon's socket (daemon/config's TestDefaults) and
	// the 10s the plugin documents ("default 10s" in its messages).
	const defSocket, defTimeout = "/var/run/vpcchain/ipamd.sock", 10 * time.Second

	tests := []struct {
		name        string
		json        string
		wantCode    uint     // 0: success
		wantMsg     []string // substrings of the error message
		wantSocket  string
		wantTimeout time.Duration
	}{
		{name: "defaults", json: head + `,"ipam":{"type":"vpc-ipam"}}`,
			wantSocket: defSocket, wantTimeout: defTimeout},
		{name: "no ipam section", json: head + `}`,
			wantSocket: defSocket, wantTimeout: defTimeout},
		{name: "explicit values", json: head + `,"ipam":{"type":"vpc-ipam","socket":"/run/x/ipamd.sock","timeout":"5s"}}`,
			wantSocket: "/run/x/ipamd.sock", wantTimeout: 5 * time.Second},
		{name: "null and empty values mean default", json: head + `,"ipam":{"type":"vpc-ipam","socket":null,"timeout":""}}`,
			wantSocket: defSocket, wantTimeout: defTimeout},
		{name: "maximum timeout", json: head + `,"ipam":{"timeout":"2m"}}`,
			wantSocket: defSocket, wantTimeout: 2 * time.Minute},
		{name: "sub-second timeout", json: head + `,"ipam":{"timeout":"250ms"}}`,
			wantSocket: defSocket, wantTimeout: 250 * time.Millisecond},
		{name: "unknown top-level fields belong to the interface plugin", json: head + `,"somethingElse":{"a":1},"ipam":{}}`,
			wantSocket: defSocket, wantTimeout: defTimeout},

		{name: "malformed JSON", json: head + `,"ipam":{"type":"vpc-ipam"`,
			wantCode: types.ErrDecodingFailure, wantMsg: []string{"cannot decode network configuration"}},
		{name: "ipam is not an object", json: head + `,"ipam":"vpc-ipam"}`,
			wantCode: types.ErrDecodingFailure, wantMsg: []string{"ipam", "want a JSON object, got string"}},
		{name: "timeout as a number", json: head + `,"ipam":{"timeout":5}}`,
			wantCode: types.ErrDecodingFailure, wantMsg: []string{"ipam.timeout", `want a duration string such as "5s", got number 5`}},
		{name: "socket as a boolean", json: head + `,"ipam":{"socket":true}}`,
			wantCode: types.ErrDecodingFailure, wantMsg: []string{"ipam.socket", "got boolean true"}},
		{name: "type as an object", json: head + `,"ipam":{"type":{}}}`,
			wantCode: types.ErrDecodingFailure, wantMsg: []string{"ipam.type", "got object"}},
		{name: "unknown ipam field", json: head + `,"ipam":{"type":"vpc-ipam","sokcet":"/run/x.sock"}}`,
			wantCode: types.ErrUnsupportedField, wantMsg: []string{`ipam.sokcet (value "/run/x.sock")`, "allowed fields are socket, timeout, type"}},
		{name: "duration without unit", json: head + `,"ipam":{"timeout":"5"}}`,
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{`ipam.timeout "5" is not a duration`, "missing unit", "at most 2m0s", "default 10s"}},
		{name: "garbage duration", json: head + `,"ipam":{"timeout":"soon"}}`,
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{`ipam.timeout "soon" is not a duration`}},
		{name: "zero timeout", json: head + `,"ipam":{"timeout":"0s"}}`,
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{`ipam.timeout "0s" is not positive`, "greater than 0"}},
		{name: "negative timeout", json: head + `,"ipam":{"timeout":"-1s"}}`,
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{`ipam.timeout "-1s" is not positive`}},
		{name: "too long timeout", json: head + `,"ipam":{"timeout":"2m1s"}}`,
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{`ipam.timeout "2m1s" is longer than 2m0s`}},
		{name: "relative socket path", json: head + `,"ipam":{"socket":"run/ipamd.sock"}}`,
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{`ipam.socket "run/ipamd.sock" is not an absolute path`, defSocket}},
		{name: "socket path is a directory", json: head + `,"ipam":{"socket":"/var/run/vpcchain/"}}`,
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{`ipam.socket "/var/run/vpcchain/" names a directory`}},
		{name: "socket path too long", json: head + `,"ipam":{"socket":"` + long + `"}}`,
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{"is 108 bytes long", "at most 107 bytes"}},
		{name: "socket path with NUL", json: head + `,"ipam":{"socket":"/run/a\u0000b"}}`,
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{"contains a NUL byte"}},
		{name: "bad prevResult", json: head + `,"prevResult":{"ips":"nope"}}`,
			wantCode: types.ErrDecodingFailure, wantMsg: []string{"cannot decode prevResult"}},
		{name: "bad valid-attachments", json: head + `,"cni.dev/valid-attachments":{"containerID":"x"}}`,
			wantCode: types.ErrDecodingFailure, wantMsg: []string{"cni.dev/valid-attachments"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf, err := ParseConfig([]byte(tt.json))
			if tt.wantCode == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if conf.Socket != tt.wantSocket || conf.Timeout != tt.wantTimeout {
					t.Errorf("socket %q timeout %v, want %q %v", conf.Socket, conf.Timeout, tt.wantSocket, tt.wantTimeout)
				}
				if conf.Name != "vpcchain" || conf.CNIVersion != "1.1.0" {
					t.Errorf("name %q cniVersion %q", conf.Name, conf.CNIVersion)
				}
				return
			}
			var e *types.Error
			if !errors.As(err, &e) {
				t.Fatalf("want *types.Error, got %T %v", err, err)
			}
			if e.Code != tt.wantCode {
				t.Errorf("code %d, want %d (%s)", e.Code, tt.wantCode, e.Msg)
			}
			for _, w := range tt.wantMsg {
				if !strings.Contains(e.Msg, w) {
					t.Errorf("message %q does not contain %q", e.Msg, w)
				}
			}
			if !strings.HasPrefix(e.Msg, "vpc-ipam: ") {
				t.Errorf("message %q does not name the plugin", e.Msg)
			}
		})
	}
}

func TestParseConfigAttachments(t *testing.T) {
	const head = `{"cniVersion":"1.1.0","name":"vpcchain"`
	tests := []struct {
		name    string
		json    string
		has     bool
		wantIDs []string
	}{
		{"absent", head + `}`, false, nil},
		{"empty list", head + `,"cni.dev/valid-attachments":[]}`, true, nil},
		{"null list", head + `,"cni.dev/valid-attachments":null}`, true, nil},
		{"current key", head + `,"cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"},{"containerID":"b","ifname":"net1"}]}`,
			true, []string{"a/eth0", "b/net1"}},
		{"pre-1.2.3 key", head + `,"cni.dev/attachments":[{"containerID":"c","ifname":"eth0"}]}`, true, []string{"c/eth0"}},
		{"current key wins", head + `,"cni.dev/attachments":[{"containerID":"old","ifname":"eth0"}],"cni.dev/valid-attachments":[{"containerID":"new","ifname":"eth0"}]}`,
			true, []string{"new/eth0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf, err := ParseConfig([]byte(tt.json))
			if err != nil {
				t.Fatal(err)
			}
			if conf.HasValidAttachments != tt.has {
				t.Errorf("HasValidAttachments %v, want %v", conf.HasValidAttachments, tt.has)
			}
			var got []string
			for _, a := range conf.ValidAttachments {
				got = append(got, a.ContainerID+"/"+a.IfName)
			}
			if strings.Join(got, ",") != strings.Join(tt.wantIDs, ",") {
				t.Errorf("attachments %v, want %v", got, tt.wantIDs)
			}
		})
	}
}

func TestParsePodArgs(t *testing.T) {
	a, err := ParsePodArgs("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=nginx;K8S_POD_UID=123;K8S_POD_INFRA_CONTAINER_ID=abc")
	if err != nil {
		t.Fatal(err)
	}
	if a.K8S_POD_NAMESPACE != "default" || a.K8S_POD_NAME != "nginx" {
		t.Errorf("got %q/%q", a.K8S_POD_NAMESPACE, a.K8S_POD_NAME)
	}
	// Unknown keys are ignored even without IgnoreUnknown (not every runtime sends it).
	if _, err := ParsePodArgs("FOO=bar;K8S_POD_NAME=x"); err != nil {
		t.Errorf("unknown key without IgnoreUnknown: %v", err)
	}
	if a, err := ParsePodArgs(""); err != nil || a.K8S_POD_NAME != "" {
		t.Errorf("empty CNI_ARGS: %v %v", a, err)
	}
	var e *types.Error
	if _, err := ParsePodArgs("K8S_POD_NAME"); !errors.As(err, &e) || e.Code != types.ErrInvalidEnvironmentVariables {
		t.Errorf("malformed CNI_ARGS: got %v, want code 4", err)
	}
}
