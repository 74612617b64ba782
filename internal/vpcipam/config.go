package vpcipam

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/vpcchain/vpcchain/internal/cniargs"
	"github.com/vpcchain/vpcchain/internal/ipamclient"
)

// Defaults and limits of the ipam section.
const (
	// DefaultTimeout bounds one invocation's talk with the daemon (dial and
	// RPC). The daemon answers from its warm pool in milliseconds; the bound
	// only matters when it hangs, and must stay well under the runtime's own
	// CNI timeout so that our error, not the runtime's kill, is reported.
	DefaultTimeout = 10 * time.Second
	// MaxTimeout is the largest accepted "timeout".
	MaxTimeout = 2 * time.Minute
	// maxSocketPath is sizeof(sockaddr_un.sun_path) - 1 on Linux.
	maxSocketPath = 107
)

// Config is vpc-ipam's view of the network configuration on stdin. vpc-ipam
// reads the "ipam" section strictly (unknown fields are errors) and only the
// standard top-level keys; anything else at the top level belongs to the
// interface plugin that delegated to us and is ignored.
//
// Example ipam section (all fields but type optional):
//
//	"ipam": {"type": "vpc-ipam", "socket": "/var/run/vpcchain/ipamd.sock", "timeout": "5s"}
type Config struct {
	// Name is the network name: the first part of the allocation key.
	Name string
	// CNIVersion is the configuration's version, the version of our result.
	CNIVersion string

	// Socket is the daemon's unix socket (ipam.socket); default
	// ipamclient.DefaultSocket.
	Socket string
	// Timeout bounds dial + RPC (ipam.timeout); default DefaultTimeout,
	// allowed (0, MaxTimeout].
	Timeout time.Duration

	// PrevResult is the parsed prevResult (CHECK, DEL), nil when absent.
	PrevResult types.Result

	// ValidAttachments is the GC input ("cni.dev/valid-attachments", or the
	// spec's earlier name "cni.dev/attachments"); HasValidAttachments tells
	// an absent key (refused: it would release every address) from an empty
	// list (the runtime has no attachments).
	ValidAttachments    []types.GCAttachment
	HasValidAttachments bool
}

// topLevel is the part of the network configuration vpc-ipam reads.
type topLevel struct {
	CNIVersion       string                 `json:"cniVersion"`
	Name             string                 `json:"name"`
	IPAM             json.RawMessage        `json:"ipam"`
	RawPrevResult    map[string]interface{} `json:"prevResult"`
	ValidAttachments json.RawMessage        `json:"cni.dev/valid-attachments"`
	Attachments      json.RawMessage        `json:"cni.dev/attachments"` // name before cni v1.2.3
}

// ipamFields are the keys the ipam section may have.
var ipamFields = []string{"socket", "timeout", "type"}

// ParseConfig decodes and validates stdin. Errors are *types.Error:
// ErrDecodingFailure (6) for JSON that does not decode (including a field of
// the wrong JSON type), ErrUnsupportedField (2) for an unknown ipam field,
// ErrInvalidNetworkConfig (7) for a decoded but invalid value. Messages name
// the field, the value and what is allowed.
func ParseConfig(stdin []byte) (*Config, error) {
	var top topLevel
	if err := json.Unmarshal(stdin, &top); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure,
			fmt.Sprintf("vpc-ipam: cannot decode network configuration: %v", err), "")
	}
	conf := &Config{Name: top.Name, CNIVersion: top.CNIVersion, Socket: ipamclient.DefaultSocket, Timeout: DefaultTimeout}
	if err := parseIPAMSection(top.IPAM, conf); err != nil {
		return nil, err
	}
	if top.RawPrevResult != nil {
		nc := &types.NetConf{CNIVersion: top.CNIVersion, RawPrevResult: top.RawPrevResult}
		if err := version.ParsePrevResult(nc); err != nil {
			return nil, types.NewError(types.ErrDecodingFailure,
				fmt.Sprintf("vpc-ipam: cannot decode prevResult: %v", err), "")
		}
		conf.PrevResult = nc.PrevResult
	}
	// The current key wins; libcni >= 1.2.3 sends both with the same value.
	for _, f := range []struct {
		key string
		raw json.RawMessage
	}{{"cni.dev/valid-attachments", top.ValidAttachments}, {"cni.dev/attachments", top.Attachments}} {
		if len(f.raw) == 0 {
			continue
		}
		var list []types.GCAttachment // JSON null: an empty list
		if err := json.Unmarshal(f.raw, &list); err != nil {
			return nil, types.NewError(types.ErrDecodingFailure,
				fmt.Sprintf("vpc-ipam: cannot decode %s: %v (want a list of {\"containerID\": ..., \"ifname\": ...})", f.key, err), "")
		}
		conf.ValidAttachments, conf.HasValidAttachments = list, true
		break
	}
	return conf, nil
}

// parseIPAMSection decodes the ipam object field by field so that every
// error names its field.
func parseIPAMSection(raw json.RawMessage, conf *Config) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil // run without a section (e.g. directly by a test runtime): defaults
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return types.NewError(types.ErrDecodingFailure,
			fmt.Sprintf("vpc-ipam: cannot decode ipam: want a JSON object, got %s %s", jsonKind(raw), raw), "")
	}
	var unknown []string
	for k := range fields {
		if !slices.Contains(ipamFields, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		k := unknown[0]
		return types.NewError(types.ErrUnsupportedField,
			fmt.Sprintf("vpc-ipam: unsupported field ipam.%s (value %s): allowed fields are %s", k, fields[k], strings.Join(ipamFields, ", ")), "")
	}

	var typ, socket, timeout string
	for _, f := range []struct {
		name string
		dst  *string
		want string
	}{
		{"type", &typ, "a string (the IPAM plugin's name)"},
		{"socket", &socket, "a string (the daemon's unix socket path)"},
		{"timeout", &timeout, `a duration string such as "5s"`},
	} {
		v, ok := fields[f.name]
		if !ok {
			continue
		}
		if err := json.Unmarshal(v, f.dst); err != nil {
			return types.NewError(types.ErrDecodingFailure,
				fmt.Sprintf("vpc-ipam: cannot decode ipam.%s: want %s, got %s %s", f.name, f.want, jsonKind(v), v), "")
		}
	}

	if socket != "" {
		if err := validateSocket(socket); err != nil {
			return types.NewError(types.ErrInvalidNetworkConfig, "vpc-ipam: invalid network configuration: "+err.Error(), "")
		}
		conf.Socket = socket
	}
	if timeout != "" {
		d, err := parseTimeout(timeout)
		if err != nil {
			return types.NewError(types.ErrInvalidNetworkConfig, "vpc-ipam: invalid network configuration: "+err.Error(), "")
		}
		conf.Timeout = d
	}
	return nil
}

func validateSocket(p string) error {
	const allowed = "allowed: an absolute path of at most 107 bytes naming a unix socket (default " + ipamclient.DefaultSocket + ")"
	switch {
	case strings.ContainsRune(p, 0):
		return fmt.Errorf("ipam.socket %q contains a NUL byte: %s", p, allowed)
	case !filepath.IsAbs(p):
		// The runtime's working directory is unspecified.
		return fmt.Errorf("ipam.socket %q is not an absolute path: %s", p, allowed)
	case strings.HasSuffix(p, "/"):
		return fmt.Errorf("ipam.socket %q names a directory: %s", p, allowed)
	case len(p) > maxSocketPath:
		return fmt.Errorf("ipam.socket %q is %d bytes long, longer than a unix socket path can be: %s", p, len(p), allowed)
	}
	return nil
}

func parseTimeout(s string) (time.Duration, error) {
	allowed := fmt.Sprintf(`allowed: a duration such as "5s" or "500ms", greater than 0 and at most %s (default %s)`, MaxTimeout, DefaultTimeout)
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return 0, fmt.Errorf("ipam.timeout %q is not a duration (%v): %s", s, err, allowed)
	case d <= 0:
		return 0, fmt.Errorf("ipam.timeout %q is not positive: %s", s, allowed)
	case d > MaxTimeout:
		return 0, fmt.Errorf("ipam.timeout %q is longer than %s: %s", s, MaxTimeout, allowed)
	}
	return d, nil
}

// jsonKind names the JSON type of a raw value for error messages.
func jsonKind(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

// PodArgs are the CNI_ARGS keys vpc-ipam passes to the daemon (for its
// introspection and the Calico/pod bookkeeping). Other keys are ignored.
type PodArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE types.UnmarshallableString //nolint:revive,stylecheck // CNI_ARGS key
	K8S_POD_NAME      types.UnmarshallableString //nolint:revive,stylecheck // CNI_ARGS key
}

// ParsePodArgs parses CNI_ARGS; a malformed value is
// ErrInvalidEnvironmentVariables (4).
func ParsePodArgs(cniArgs string) (*PodArgs, error) {
	a := &PodArgs{}
	a.IgnoreUnknown = true
	if err := cniargs.Load(cniArgs, a); err != nil {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("vpc-ipam: cannot parse CNI_ARGS %q: %v", cniArgs, err), "")
	}
	if err := cniargs.ValidatePod(string(a.K8S_POD_NAMESPACE), string(a.K8S_POD_NAME)); err != nil {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, "vpc-ipam: invalid CNI_ARGS: "+err.Error(), "")
	}
	return a, nil
}
