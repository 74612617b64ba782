package ipamd

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	ipamv1 "github.com/vpcchain/vpcchain/api/ipam/v1"
	"github.com/vpcchain/vpcchain/internal/ipamclient"
)

// One socket answers both of its clients: the plugin's IPAM calls (ttrpc)
// and the installer's and probes' gRPC health checks; a client that sends
// neither protocol does not disturb them; Stop ends Serve.
func TestServerSocketServesIPAMAndHealth(t *testing.T) {
	f := newFixture(t, nil)
	d := f.start()
	defer d.Close()
	settle(t, d)
	dir, err := os.MkdirTemp("", "ipamd")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "ipamd.sock")
	ln, err := ipamclient.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(d)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Garbage first: a connection that is neither protocol.
	junk, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer junk.Close()
	if _, err := junk.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	junk.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := junk.Read(make([]byte, 64)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a connection in neither protocol: read %d bytes, %v; want it closed", n, err)
	}

	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, svc := range []string{"", "vpcchain.ipam.v1.IPAM"} {
		h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("gRPC health of %q: %v %v, want SERVING", svc, h.GetStatus(), err)
		}
	}

	c, err := ipamclient.Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	key := &ipamv1.Key{Network: "net", ContainerId: "c1", Ifname: "eth0"}
	add, err := c.Add(ctx, &ipamv1.AddRequest{Key: key})
	if err != nil {
		t.Fatalf("IPAM Add over the socket: %v", err)
	}
	chk, err := c.Check(ctx, &ipamv1.CheckRequest{Key: key, Ip: add.GetAllocation().GetIp()})
	if err != nil || chk.GetAllocation().GetIp() != add.GetAllocation().GetIp() {
		t.Errorf("Check: %v %v", chk, err)
	}
	if del, err := c.Del(ctx, &ipamv1.DelRequest{Key: key}); err != nil || !del.GetReleased() {
		t.Errorf("Del: %v %v", del, err)
	}

	srv.Stop()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve after Stop: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after Stop")
	}
	if _, err := ipamclient.Dial(ctx, path); err == nil {
		t.Error("the socket still accepts connections after Stop")
	}
}
