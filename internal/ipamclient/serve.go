package ipamclient

import (
	"context"
	"fmt"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ipamv1 "github.com/vpcchain/vpcchain/api/ipam/v1"
)

// NewServer returns a ttrpc server answering the IPAM API with svc; the
// caller serves it on a socket made by Listen (srv.Serve) and closes it.
func NewServer(svc ipamv1.TTRPCIPAMService) (*ttrpc.Server, error) {
	srv, err := ttrpc.NewServer()
	if err != nil {
		return nil, fmt.Errorf("ttrpc server: %w", err)
	}
	ipamv1.RegisterTTRPCIPAMService(srv, svc)
	return srv, nil
}

// UnimplementedIPAM answers every method with codes.Unimplemented; embed it
// in a service that implements only some.
type UnimplementedIPAM struct{}

func unimplemented(method string) error {
	return status.Errorf(codes.Unimplemented, "method %s not implemented", method)
}

func (UnimplementedIPAM) Add(context.Context, *ipamv1.AddRequest) (*ipamv1.AddReply, error) {
	return nil, unimplemented("Add")
}

func (UnimplementedIPAM) Del(context.Context, *ipamv1.DelRequest) (*ipamv1.DelReply, error) {
	return nil, unimplemented("Del")
}

func (UnimplementedIPAM) Check(context.Context, *ipamv1.CheckRequest) (*ipamv1.CheckReply, error) {
	return nil, unimplemented("Check")
}

func (UnimplementedIPAM) Status(context.Context, *ipamv1.StatusRequest) (*ipamv1.StatusReply, error) {
	return nil, unimplemented("Status")
}

func (UnimplementedIPAM) GC(context.Context, *ipamv1.GCRequest) (*ipamv1.GCReply, error) {
	return nil, unimplemented("GC")
}

func (UnimplementedIPAM) Introspect(context.Context, *ipamv1.IntrospectRequest) (*ipamv1.IntrospectReply, error) {
	return nil, unimplemented("Introspect")
}
