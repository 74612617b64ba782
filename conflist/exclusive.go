package conflist

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
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

// MetaPlugins are the plugin types of meta plugins: their configuration
// sorts first on purpose and hands each pod to the node's primary network
// (Multus thin "multus" and thick "multus-shim", CNI-Genie "genie"), which
// then is ours. Exclusive mode never sets one aside.
var MetaPlugins = []string{"multus", "multus-shim", "genie"}

// maxConfSize bounds what is read of a file to tell what it is; a bigger
// one is not taken for a network configuration.
const maxConfSize = 1 << 20

// confKind is what a file in the conf dir is to exclusive mode.
type confKind int

const (
	notNetwork confKind = iota // no network configuration we can read: never touched
	metaPlugin                 // a meta plugin's: never set aside
	primary                    // a competing primary network
)

// kindOf reads the file at path and says what it is as a network
// configuration named name, by the type of the plugin a runtime runs first
// for it (a .conflist's first plugin, a .conf's or .json's own, as libcni
// loads them).
func kindOf(path, name string) confKind {
	if !networkConfig(name) {
		return notNetwork
	}
	f, err := os.Open(path)
	if err != nil {
		return notNetwork
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfSize+1))
	if err != nil || len(data) > maxConfSize {
		return notNetwork
	}
	var c struct {
		Type    string `json:"type"`
		Plugins []struct {
			Type string `json:"type"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return notNetwork
	}
	t := c.Type
	if filepath.Ext(name) == ".conflist" {
		t = ""
		if len(c.Plugins) > 0 {
			t = c.Plugins[0].Type
		}
	}
	switch {
	case t == "":
		return notNetwork
	case slices.Contains(MetaPlugins, t):
		return metaPlugin
	}
	return primary
}

// classify sorts the regular files in dir that sort before ours
// (containerd and CRI-O use the first network configuration in lexical
// order) by what they are.
func classify(dir, ours string) (map[confKind][]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[confKind][]string{}
	for _, e := range ents {
		if e.Type().IsRegular() && networkConfig(e.Name()) && e.Name() < ours {
			k := kindOf(filepath.Join(dir, e.Name()), e.Name())
			out[k] = append(out[k], e.Name())
		}
	}
	for _, l := range out {
		slices.Sort(l)
	}
	return out, nil
}

// Shadowing lists the competing network configurations in dir that sort
// before ours: each would be the node's network instead of ours (the AWS
// VPC CNI's 10-aws.conflist, Calico's own 10-calico.conflist). A meta
// plugin's configuration, or a file that is no network configuration, is
// not one.
func Shadowing(dir, ours string) ([]string, error) {
	o, err := classify(dir, ours)
	if err != nil {
		return nil, err
	}
	return o[primary], nil
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

// restoreSetAside puts back the configurations set aside in dir that want
// accepts (given the name to restore and the set-aside file's path). One
// whose name was written again since stays set aside: the new file is its
// owner's latest word. It returns what it put back and what it kept set
// aside because of that.
func restoreSetAside(dir string, want func(name, path string) bool) (restored, kept []string, err error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	var errs []error
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), SetAsideSuffix)
		from := filepath.Join(dir, e.Name())
		// Only names setAside could have made.
		if !ok || !e.Type().IsRegular() || !networkConfig(name) || !want(name, from) {
			continue
		}
		switch done, err := restoreOne(from, filepath.Join(dir, name)); {
		case err != nil:
			errs = append(errs, fmt.Errorf("restore %s: %w", name, err))
		case done:
			restored = append(restored, name)
		default:
			kept = append(kept, name)
		}
	}
	_ = syncDir(dir)
	return restored, kept, errors.Join(errs...)
}

// restoreOne renames from to to unless to exists; it reports whether it did.
func restoreOne(from, to string) (bool, error) {
	// A hard link never replaces a file written meanwhile; a rename would.
	err := os.Link(from, to)
	switch {
	case errors.Is(err, fs.ErrExist):
		return false, nil
	case err == nil:
		return true, os.Remove(from)
	}
	// A filesystem without hard links: look, then rename.
	if _, err := os.Lstat(to); err == nil {
		return false, nil
	}
	return true, os.Rename(from, to)
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
