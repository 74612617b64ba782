package imds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sdkimds "github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// fakeClock is an injectable, manually advanced clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

const (
	macA0 = "02:00:00:00:00:a0"
	macA1 = "02:00:00:00:00:a1"
	macB0 = "02:00:00:00:00:b0"
)

func metadataA() Metadata {
	return Metadata{
		InstanceID:   "i-0aaaaaaaaaaaaaaa1",
		InstanceType: "m5.large",
		Region:       "us-west-2",
		AZ:           "us-west-2a",
		AccountID:    "123456789012",
		ImageID:      "ami-0123456789abcdef0",
		LocalIPv4:    "10.0.1.10",
		MAC:          macA0,
		VPCID:        "vpc-0123",
		VPCCIDRs:     []string{"10.0.0.0/16", "100.64.0.0/16"},
		// Deliberately out of device order: IMDS must sort them.
		ENIs: []ENIMetadata{
			{
				MAC: macA1, InterfaceID: "eni-a1", DeviceNumber: 1,
				SubnetID: "subnet-2", SubnetCIDR: "100.64.0.0/24", VPCID: "vpc-0123",
				SecurityGroupIDs: []string{"sg-1", "sg-2"},
				LocalIPv4s:       []string{"100.64.0.5", "100.64.0.6"},
				IPv4Prefixes:     []string{"100.64.0.16/28", "100.64.0.32/28"},
			},
			{
				MAC: macA0, InterfaceID: "eni-a0", DeviceNumber: 0,
				SubnetID: "subnet-1", SubnetCIDR: "10.0.1.0/24", VPCID: "vpc-0123",
				SecurityGroupIDs: []string{"sg-1"},
				LocalIPv4s:       []string{"10.0.1.10", "10.0.1.11", "10.0.1.12"},
			},
		},
	}
}

func metadataB() Metadata {
	return Metadata{
		InstanceID:   "i-0bbbbbbbbbbbbbbb2",
		InstanceType: "c5.xlarge",
		Region:       "us-west-2",
		AZ:           "us-west-2b",
		AccountID:    "123456789012",
		ImageID:      "ami-0123456789abcdef0",
		VPCCIDRs:     []string{"10.0.0.0/16"},
		// MAC, LocalIPv4 and VPCID left empty: derived from device 0.
		ENIs: []ENIMetadata{{
			MAC: macB0, InterfaceID: "eni-b0", DeviceNumber: 0,
			SubnetID: "subnet-3", SubnetCIDR: "10.0.2.0/24", VPCID: "vpc-0123",
			SecurityGroupIDs: []string{"sg-9"},
			LocalIPv4s:       []string{"10.0.2.20"},
		}},
	}
}

// startServer serves id's handler of s on an httptest server.
func startServer(t *testing.T, s *Server, id string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(s.HandlerFor(id))
	t.Cleanup(srv.Close)
	return srv
}

// newClient is the unmodified SDK client pointed at srv. Fallback to IMDSv1
// is disabled so every call provably used a token.
func newClient(srv *httptest.Server) *sdkimds.Client {
	return sdkimds.New(sdkimds.Options{
		Endpoint:          srv.URL,
		ClientEnableState: sdkimds.ClientEnabled,
		EnableFallback:    aws.FalseTernary,
	})
}

func getMetadata(ctx context.Context, c *sdkimds.Client, path string) (string, error) {
	out, err := c.GetMetadata(ctx, &sdkimds.GetMetadataInput{Path: path})
	if err != nil {
		return "", err
	}
	defer out.Content.Close()
	b, err := io.ReadAll(out.Content)
	return string(b), err
}

func mustGet(t *testing.T, c *sdkimds.Client, path string) string {
	t.Helper()
	v, err := getMetadata(context.Background(), c, path)
	if err != nil {
		t.Fatalf("GetMetadata(%q): %v", path, err)
	}
	return v
}

func httpStatus(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// rawToken gets a token with plain net/http.
func rawToken(t *testing.T, url, ttl string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, url+TokenPath, nil)
	req.Header.Set(TokenTTLHeader, ttl)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT token: status %d", resp.StatusCode)
	}
	return string(b)
}

// rawGet issues a plain GET with an optional token and returns status, body.
func rawGet(t *testing.T, url, path, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url+path, nil)
	if token != "" {
		req.Header.Set(TokenHeader, token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestTokenFlowSDK(t *testing.T) {
	s := New(Options{})
	id := metadataA().InstanceID
	s.Publish(id, metadataA())
	srv := startServer(t, s, id)
	c := newClient(srv)

	if got := mustGet(t, c, "instance-id"); got != id {
		t.Fatalf("instance-id = %q, want %q", got, id)
	}
	// One token PUT plus one GET.
	if n := s.Requests(id); n != 2 {
		t.Fatalf("Requests = %d after first call, want 2 (PUT token + GET)", n)
	}
	// The SDK caches the token: the next call is a single GET.
	mustGet(t, c, "instance-type")
	if n := s.Requests(id); n != 3 {
		t.Fatalf("Requests = %d after second call, want 3", n)
	}
}

func TestTokenPUT(t *testing.T) {
	s := New(Options{})
	s.Publish("i-1", metadataA())
	srv := startServer(t, s, "i-1")

	tests := []struct {
		name    string
		method  string
		ttl     *string
		xff     bool
		want    int
		wantTTL string
	}{
		{name: "min", method: http.MethodPut, ttl: aws.String("1"), want: 200, wantTTL: "1"},
		{name: "max", method: http.MethodPut, ttl: aws.String("21600"), want: 200, wantTTL: "21600"},
		{name: "missing", method: http.MethodPut, want: 400},
		{name: "zero", method: http.MethodPut, ttl: aws.String("0"), want: 400},
		{name: "negative", method: http.MethodPut, ttl: aws.String("-5"), want: 400},
		{name: "too long", method: http.MethodPut, ttl: aws.String("21601"), want: 400},
		{name: "not a number", method: http.MethodPut, ttl: aws.String("abc"), want: 400},
		{name: "forwarded", method: http.MethodPut, ttl: aws.String("60"), xff: true, want: 403},
		{name: "GET", method: http.MethodGet, ttl: aws.String("60"), want: 405},
	}
	seen := map[string]bool{}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, srv.URL+TokenPath, nil)
			if tc.ttl != nil {
				req.Header.Set(TokenTTLHeader, *tc.ttl)
			}
			if tc.xff {
				req.Header.Set("X-Forwarded-For", "10.0.0.1")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.want {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tc.want)
			}
			if tc.want != 200 {
				return
			}
			if got := resp.Header.Get(TokenTTLHeader); got != tc.wantTTL {
				t.Fatalf("TTL header = %q, want %q", got, tc.wantTTL)
			}
			tok := string(body)
			if len(tok) < 32 || seen[tok] {
				t.Fatalf("token %q too short or repeated", tok)
			}
			seen[tok] = true
			if code, _ := rawGet(t, srv.URL, "/latest/meta-data/instance-id", tok); code != 200 {
				t.Fatalf("GET with fresh token: status %d", code)
			}
		})
	}
}

func TestGetMetadataPaths(t *testing.T) {
	s := New(Options{})
	id := metadataA().InstanceID
	s.Publish(id, metadataA())
	c := newClient(startServer(t, s, id))

	eni0 := "network/interfaces/macs/" + macA0 + "/"
	eni1 := "network/interfaces/macs/" + macA1 + "/"
	tests := []struct{ path, want string }{
		{"instance-id", id},
		{"instance-type", "m5.large"},
		{"ami-id", "ami-0123456789abcdef0"},
		{"local-ipv4", "10.0.1.10"},
		// IP-based naming, EC2's default: the primary private IPv4 address
		// in the region's internal domain.
		{"local-hostname", "ip-10-0-1-10.us-west-2.compute.internal"},
		{"hostname", "ip-10-0-1-10.us-west-2.compute.internal"},
		{eni1 + "local-hostname", "ip-100-64-0-5.us-west-2.compute.internal"},
		{"mac", macA0},
		{"placement/availability-zone", "us-west-2a"},
		{"placement/region", "us-west-2"},
		{"network/interfaces/macs/", macA0 + "/\n" + macA1 + "/"},
		{"network/interfaces/macs", macA0 + "/\n" + macA1 + "/"},
		{eni0 + "device-number", "0"},
		{eni0 + "interface-id", "eni-a0"},
		{eni0 + "subnet-id", "subnet-1"},
		{eni0 + "vpc-id", "vpc-0123"},
		{eni0 + "security-group-ids", "sg-1"},
		{eni0 + "local-ipv4s", "10.0.1.10\n10.0.1.11\n10.0.1.12"},
		{eni0 + "subnet-ipv4-cidr-block", "10.0.1.0/24"},
		{eni0 + "vpc-ipv4-cidr-blocks", "10.0.0.0/16\n100.64.0.0/16"},
		{eni0 + "vpc-ipv4-cidr-block", "10.0.0.0/16"},
		{eni0 + "network-card", "0"},
		{eni0 + "mac", macA0},
		{eni0 + "owner-id", "123456789012"},
		{eni1 + "device-number", "1"},
		{eni1 + "interface-id", "eni-a1"},
		{eni1 + "subnet-id", "subnet-2"},
		{eni1 + "security-group-ids", "sg-1\nsg-2"},
		{eni1 + "local-ipv4s", "100.64.0.5\n100.64.0.6"},
		{eni1 + "ipv4-prefix", "100.64.0.16/28\n100.64.0.32/28"},
		{eni1 + "subnet-ipv4-cidr-block", "100.64.0.0/24"},
		{eni1 + "network-card", "0"},
		// Directory listings.
		{"", "ami-id\nhostname\ninstance-id\ninstance-type\nlocal-hostname\nlocal-ipv4\nmac\nnetwork/\nplacement/"},
		{"/", "ami-id\nhostname\ninstance-id\ninstance-type\nlocal-hostname\nlocal-ipv4\nmac\nnetwork/\nplacement/"},
		{"placement/", "availability-zone\nregion"},
		{"network/", "interfaces/"},
		{"network/interfaces/", "macs/"},
		{eni0, "device-number\ninterface-id\nlocal-hostname\nlocal-ipv4s\nmac\nnetwork-card\nowner-id\nsecurity-group-ids\nsubnet-id\nsubnet-ipv4-cidr-block\nvpc-id\nvpc-ipv4-cidr-block\nvpc-ipv4-cidr-blocks"},
		{eni1, "device-number\ninterface-id\nipv4-prefix\nlocal-hostname\nlocal-ipv4s\nmac\nnetwork-card\nowner-id\nsecurity-group-ids\nsubnet-id\nsubnet-ipv4-cidr-block\nvpc-id\nvpc-ipv4-cidr-block\nvpc-ipv4-cidr-blocks"},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			if got := mustGet(t, c, tc.path); got != tc.want {
				t.Fatalf("GetMetadata(%q) = %q, want %q", tc.path, got, tc.want)
			}
		})
	}
}

func TestNotFound(t *testing.T) {
	s := New(Options{})
	id := metadataA().InstanceID
	s.Publish(id, metadataA())
	c := newClient(startServer(t, s, id))

	for _, path := range []string{
		// No prefixes on the primary ENI: IMDS answers 404.
		"network/interfaces/macs/" + macA0 + "/ipv4-prefix",
		"network/interfaces/macs/02:00:00:00:00:ff/",
		"network/interfaces/macs/" + macA0 + "/ipv6s",
		"no-such-key",
		"instance-id/extra",
		"iam/security-credentials/",
	} {
		t.Run(path, func(t *testing.T) {
			v, err := getMetadata(context.Background(), c, path)
			if err == nil {
				t.Fatalf("GetMetadata(%q) = %q, want an error", path, v)
			}
			if code := httpStatus(err); code != http.StatusNotFound {
				t.Fatalf("GetMetadata(%q): status %d (%v), want 404", path, code, err)
			}
		})
	}

	srv := startServer(t, s, id)
	tok := rawToken(t, srv.URL, "60")
	for _, path := range []string{"/latest/user-data", "/latest/nope", "/2009-04-04/meta-data/"} {
		if code, _ := rawGet(t, srv.URL, path, tok); code != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404", path, code)
		}
	}
}

func TestIdentityDocumentAndRegion(t *testing.T) {
	clock := newFakeClock()
	s := New(Options{Now: clock.Now})
	id := metadataA().InstanceID
	s.Publish(id, metadataA())
	boot := clock.Now()
	clock.Advance(time.Hour)
	s.Publish(id, metadataA()) // PendingTime stays the first publish
	c := newClient(startServer(t, s, id))
	ctx := context.Background()

	doc, err := c.GetInstanceIdentityDocument(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := doc.InstanceIdentityDocument
	want := sdkimds.InstanceIdentityDocument{
		InstanceID:       id,
		InstanceType:     "m5.large",
		Region:           "us-west-2",
		AvailabilityZone: "us-west-2a",
		PrivateIP:        "10.0.1.10",
		AccountID:        "123456789012",
		ImageID:          "ami-0123456789abcdef0",
		Architecture:     "x86_64",
		PendingTime:      boot,
		Version:          IdentityDocumentVersion,
	}
	if !got.PendingTime.Equal(want.PendingTime) {
		t.Errorf("PendingTime = %v, want %v", got.PendingTime, want.PendingTime)
	}
	got.PendingTime, want.PendingTime = time.Time{}, time.Time{}
	if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
		t.Errorf("identity document\n got %+v\nwant %+v", got, want)
	}

	region, err := c.GetRegion(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if region.Region != "us-west-2" {
		t.Errorf("GetRegion = %q", region.Region)
	}

	dyn, err := c.GetDynamicData(ctx, &sdkimds.GetDynamicDataInput{Path: "instance-identity/"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(dyn.Content)
	dyn.Content.Close()
	if string(b) != "document" {
		t.Errorf("dynamic/instance-identity/ = %q", b)
	}
}

func TestUnauthorized(t *testing.T) {
	clock := newFakeClock()
	s := New(Options{Now: clock.Now})
	id := metadataA().InstanceID
	s.Publish(id, metadataA())
	srv := startServer(t, s, id)

	short := rawToken(t, srv.URL, "1")
	clock.Advance(1 * time.Second) // a TTL=1 token is dead at 1s
	long := rawToken(t, srv.URL, "60")

	tests := []struct {
		name, path, token string
		want              int
	}{
		{"no token", "/latest/meta-data/instance-id", "", 401},
		{"no token listing", "/latest/meta-data/", "", 401},
		{"no token document", "/latest/dynamic/instance-identity/document", "", 401},
		{"bogus token", "/latest/meta-data/instance-id", "AAAAbogus", 401},
		{"expired token", "/latest/meta-data/instance-id", short, 401},
		{"valid token", "/latest/meta-data/instance-id", long, 200},
		{"valid token document", "/latest/dynamic/instance-identity/document", long, 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := rawGet(t, srv.URL, tc.path, tc.token)
			if code != tc.want {
				t.Fatalf("status = %d, want %d", code, tc.want)
			}
			if code == 401 && !strings.Contains(body, "401 - Unauthorized") {
				t.Fatalf("401 body = %q", body)
			}
		})
	}

	// PUT-ing on a metadata path is not allowed.
	req, _ := http.NewRequest(http.MethodPut, srv.URL+"/latest/meta-data/instance-id", nil)
	req.Header.Set(TokenHeader, long)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("PUT metadata: status %d, want 405", resp.StatusCode)
	}
}

func TestLag(t *testing.T) {
	clock := newFakeClock()
	const lag = 5 * time.Second
	s := New(Options{Lag: lag, Now: clock.Now})
	id := metadataA().InstanceID
	md := metadataA()
	s.Publish(id, md) // boot snapshot: visible at once despite the lag
	c := newClient(startServer(t, s, id))
	path := "network/interfaces/macs/" + macA0 + "/local-ipv4s"
	oldIPs := "10.0.1.10\n10.0.1.11\n10.0.1.12"
	newIPs := oldIPs + "\n10.0.1.13"

	if got := mustGet(t, c, path); got != oldIPs {
		t.Fatalf("at boot: %q, want %q", got, oldIPs)
	}

	clock.Advance(time.Second)
	md.ENIs[1].LocalIPv4s = append(md.ENIs[1].LocalIPv4s, "10.0.1.13") // ENIs[1] is device 0
	s.Publish(id, md)
	published := clock.Now()

	steps := []struct {
		at   time.Duration // since the second Publish
		want string
	}{
		{0, oldIPs},
		{time.Second, oldIPs},
		{lag - time.Millisecond, oldIPs},
		{lag, newIPs},
		{lag + time.Minute, newIPs},
	}
	for _, st := range steps {
		clock.Advance(published.Add(st.at).Sub(clock.Now()))
		if got := mustGet(t, c, path); got != st.want {
			t.Fatalf("%v after publish: %q, want %q", st.at, got, st.want)
		}
	}
	if n := s.history(id); n != 1 {
		t.Fatalf("history keeps %d snapshots, want 1 once superseded", n)
	}
}

func TestLagRuntimeAndHistoryBound(t *testing.T) {
	clock := newFakeClock()
	s := New(Options{Lag: time.Minute, Now: clock.Now})
	id := "i-1"
	md := metadataB()
	s.Publish(id, md)
	c := newClient(startServer(t, s, id))
	path := "network/interfaces/macs/" + macB0 + "/local-ipv4s"

	// Ten changes, one per second, all still within the lag.
	for i := 1; i <= 10; i++ {
		clock.Advance(time.Second)
		md.ENIs[0].LocalIPv4s = append(md.ENIs[0].LocalIPv4s, fmt.Sprintf("10.0.2.%d", 100+i))
		s.Publish(id, md)
	}
	if got := mustGet(t, c, path); got != "10.0.2.20" {
		t.Fatalf("within lag: %q", got)
	}
	if n := s.history(id); n != 11 {
		t.Fatalf("history = %d, want 11 (none superseded yet)", n)
	}

	// Shrink the lag to 4.5s: changes published up to now-4.5s show.
	s.SetLag(4500 * time.Millisecond)
	if s.Lag() != 4500*time.Millisecond {
		t.Fatalf("Lag() = %v", s.Lag())
	}
	got := mustGet(t, c, path)
	if want := "10.0.2.20\n10.0.2.101\n10.0.2.102\n10.0.2.103\n10.0.2.104\n10.0.2.105"; got != want {
		t.Fatalf("after SetLag: %q, want %q", got, want)
	}
	if n := s.history(id); n != 6 {
		t.Fatalf("history = %d, want 6 (5 superseded dropped)", n)
	}

	s.SetLag(0)
	got = mustGet(t, c, path)
	if !strings.HasSuffix(got, "10.0.2.110") {
		t.Fatalf("lag 0: %q", got)
	}
	if n := s.history(id); n != 1 {
		t.Fatalf("history = %d, want 1", n)
	}
	v, ok := s.Visible(id)
	if !ok || len(v.ENIs[0].LocalIPv4s) != 11 {
		t.Fatalf("Visible = %+v, %v", v, ok)
	}
}

func TestPublishCopiesDeeply(t *testing.T) {
	s := New(Options{})
	md := metadataA()
	s.Publish("i-1", md)
	md.ENIs[0].LocalIPv4s[0] = "9.9.9.9"
	md.ENIs[0].IPv4Prefixes[0] = "9.9.9.0/28"
	md.ENIs[1].SecurityGroupIDs[0] = "sg-evil"
	md.VPCCIDRs[0] = "9.0.0.0/8"
	md.ENIs = append(md.ENIs[:1], ENIMetadata{MAC: "x"})

	c := newClient(startServer(t, s, "i-1"))
	for path, want := range map[string]string{
		"network/interfaces/macs/" + macA1 + "/local-ipv4s":          "100.64.0.5\n100.64.0.6",
		"network/interfaces/macs/" + macA1 + "/ipv4-prefix":          "100.64.0.16/28\n100.64.0.32/28",
		"network/interfaces/macs/" + macA0 + "/security-group-ids":   "sg-1",
		"network/interfaces/macs/" + macA0 + "/vpc-ipv4-cidr-blocks": "10.0.0.0/16\n100.64.0.0/16",
	} {
		if got := mustGet(t, c, path); got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}
	// Visible returns a copy too.
	v, _ := s.Visible("i-1")
	v.ENIs[0].LocalIPv4s[0] = "1.1.1.1"
	if w, _ := s.Visible("i-1"); w.ENIs[0].LocalIPv4s[0] != "10.0.1.10" {
		t.Fatalf("Visible leaked internal state: %v", w.ENIs[0].LocalIPv4s)
	}
}

func TestTwoInstances(t *testing.T) {
	s := New(Options{})
	a, b := metadataA(), metadataB()
	s.Publish(a.InstanceID, a)
	s.Publish(b.InstanceID, b)
	srvA := startServer(t, s, a.InstanceID)
	srvB := startServer(t, s, b.InstanceID)
	ca, cb := newClient(srvA), newClient(srvB)

	tests := []struct {
		name   string
		c      *sdkimds.Client
		path   string
		want   string
		client string
	}{
		{"A instance-id", ca, "instance-id", a.InstanceID, "A"},
		{"B instance-id", cb, "instance-id", b.InstanceID, "B"},
		{"A local-ipv4", ca, "local-ipv4", "10.0.1.10", "A"},
		{"B local-ipv4 derived", cb, "local-ipv4", "10.0.2.20", "B"},
		{"B mac derived", cb, "mac", macB0, "B"},
		{"A macs", ca, "network/interfaces/macs/", macA0 + "/\n" + macA1 + "/", "A"},
		{"B macs", cb, "network/interfaces/macs/", macB0 + "/", "B"},
		{"B az", cb, "placement/availability-zone", "us-west-2b", "B"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := mustGet(t, tc.c, tc.path); got != tc.want {
				t.Fatalf("%s = %q, want %q", tc.path, got, tc.want)
			}
		})
	}
	if _, err := getMetadata(context.Background(), cb, "network/interfaces/macs/"+macA0+"/"); httpStatus(err) != 404 {
		t.Fatalf("B sees A's ENI: %v", err)
	}
	docB, err := cb.GetInstanceIdentityDocument(context.Background(), nil)
	if err != nil || docB.InstanceID != b.InstanceID || docB.PrivateIP != "10.0.2.20" {
		t.Fatalf("B identity document: %+v, %v", docB, err)
	}

	// Tokens are bound to the instance they were issued for.
	tokA, tokB := rawToken(t, srvA.URL, "60"), rawToken(t, srvB.URL, "60")
	for _, tc := range []struct {
		name, url, token string
		want             int
	}{
		{"A token on A", srvA.URL, tokA, 200},
		{"B token on B", srvB.URL, tokB, 200},
		{"A token on B", srvB.URL, tokA, 401},
		{"B token on A", srvA.URL, tokB, 401},
	} {
		if code, _ := rawGet(t, tc.url, "/latest/meta-data/instance-id", tc.token); code != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, code, tc.want)
		}
	}
	if s.Requests(a.InstanceID) == 0 || s.Requests(b.InstanceID) == 0 || s.Requests("i-none") != 0 {
		t.Fatalf("Requests A=%d B=%d none=%d", s.Requests(a.InstanceID), s.Requests(b.InstanceID), s.Requests("i-none"))
	}
}

func TestUnpublishedAndRemoved(t *testing.T) {
	s := New(Options{})
	srv := startServer(t, s, "i-late")
	tok := rawToken(t, srv.URL, "60")
	if code, _ := rawGet(t, srv.URL, "/latest/meta-data/instance-id", tok); code != 404 {
		t.Fatalf("before Publish: status %d, want 404", code)
	}
	s.Publish("i-late", metadataB())
	if code, body := rawGet(t, srv.URL, "/latest/meta-data/instance-id", tok); code != 200 || body != metadataB().InstanceID {
		t.Fatalf("after Publish: %d %q", code, body)
	}
	s.Remove("i-late")
	if code, _ := rawGet(t, srv.URL, "/latest/meta-data/instance-id", tok); code != 401 {
		t.Fatalf("after Remove, old token: status %d, want 401", code)
	}
	if _, ok := s.Visible("i-late"); ok {
		t.Fatal("Visible after Remove")
	}
}

func TestConcurrentPublishAndRead(t *testing.T) {
	s := New(Options{Lag: time.Millisecond})
	id := "i-1"
	s.Publish(id, metadataB())
	srv := startServer(t, s, id)
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wg.Add(1)
	go func() {
		defer wg.Done()
		md := metadataB()
		for i := 0; ctx.Err() == nil && i < 500; i++ {
			md.ENIs[0].LocalIPv4s = append(md.ENIs[0].LocalIPv4s[:1], fmt.Sprintf("10.0.2.%d", i%200+30))
			s.Publish(id, md)
		}
	}()
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newClient(srv)
			for i := 0; i < 50; i++ {
				v, err := getMetadata(ctx, c, "network/interfaces/macs/"+macB0+"/local-ipv4s")
				if err != nil || !strings.HasPrefix(v, "10.0.2.20") {
					t.Errorf("read %d: %q %v", i, v, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func BenchmarkGetMetadata(b *testing.B) {
	s := New(Options{})
	s.Publish("i-1", metadataA())
	srv := httptest.NewServer(s.HandlerFor("i-1"))
	defer srv.Close()
	c := newClient(srv)
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		if _, err := getMetadata(ctx, c, "network/interfaces/macs/"+macA0+"/local-ipv4s"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(s.Requests("i-1"))/float64(b.N), "imds-req/op")
}
