package conflist

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// SetAsideSuffix is appended to another network configuration the installer
// moves out of the way: the runtime no longer loads it, and its content is
// kept for whoever wants it back.
const SetAsideSuffix = ".vpcchain-disabled"

// networkConfig reports whether name is a file a runtime loads as a network
// configuration (libcni's ConfFiles: .conf, .conflist, .json).
func networkConfig(name string) bool {
	switch filepath.Ext(name) {
	case ".conf", ".conflist", ".json":
		return !strings.Contains(name, tmpMarker)
	}
	return false
}

// Shadowing lists the network configurations in dir that sort before ours:
// containerd and CRI-O use the first one in lexical order, so each of these
// would be the node's network instead of ours (the AWS VPC CNI's
// 10-aws.conflist, Calico's own 10-calico.conflist).
func Shadowing(dir, ours string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.Type().IsRegular() && networkConfig(e.Name()) && e.Name() < ours {
			out = append(out, e.Name())
		}
	}
	slices.Sort(out)
	return out, nil
}

// setAside renames the configurations that would shadow ours, once ours is
// in place (so the node never has no configuration in between).
func setAside(dir string, names []string) error {
	for _, n := range names {
		if err := os.Rename(filepath.Join(dir, n), filepath.Join(dir, n+SetAsideSuffix)); err != nil {
			return fmt.Errorf("set aside %s: %w", n, err)
		}
	}
	return syncDir(dir)
}

// ExclusiveFromEnv reads VPCCHAIN_CNI_EXCLUSIVE: true (the default) sets
// aside the configurations that would shadow ours, false leaves them.
func ExclusiveFromEnv(get Lookup) (bool, error) {
	if get == nil {
		get = os.LookupEnv
	}
	v, ok := get(EnvExclusive)
	if v = strings.TrimSpace(v); !ok || v == "" {
		return true, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%s=%q is invalid: want true or false", EnvExclusive, v)
	}
	return b, nil
}
