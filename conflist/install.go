package conflist

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Defaults of InstallOptions.
const (
	DefaultCNIBinDir    = "/opt/cni/bin"
	DefaultCNIConfDir   = "/etc/cni/net.d"
	DefaultConfName     = "10-vpcchain.conflist"
	DefaultWaitTimeout  = 5 * time.Minute
	DefaultPollInterval = time.Second

	binMode  fs.FileMode = 0o755
	confMode fs.FileMode = 0o644
	// tmpMarker is in the name of every temporary file we create; a name
	// with it never ends in .conf/.conflist/.json, so a runtime scanning the
	// conf dir never loads a half-written file.
	tmpMarker = ".vpcchain-tmp-"
)

// OwnBinaries are the plugin binaries vpcchain ships and owns; Uninstall
// removes only these. The upstream ones (portmap, bandwidth, loopback) may
// serve other networks on the node and are never removed (host-local too).
var OwnBinaries = []string{TypeBridge, TypeIPAM, TypeSNAT, TypePolicyHook, TypeEgressV4}

// requiredBinaries must be in BinSrc; optionalBinaries are copied when they are.
var (
	requiredBinaries = []string{TypeBridge, TypeIPAM, TypeSNAT}
	optionalBinaries = []string{TypePolicyHook, TypeEgressV4, TypePortmap, TypeBandwidth, TypeLoopback, TypeHostLocal}
)

// TypeLoopback is the upstream loopback plugin: containerd's and CRI-O's
// CRI runs it for every pod sandbox whatever the network, and a node built
// without the distribution's CNI plugins package has none (found by the
// cluster tier: every pod failed "failed to find plugin loopback").
const TypeLoopback = "loopback"

// InstallOptions say what Install copies and writes where.
type InstallOptions struct {
	// BinSrc holds the plugin binaries to install: vpc-bridge, vpc-ipam and
	// vpc-snat are required; policy-hook, portmap, bandwidth and loopback
	// are copied when present.
	BinSrc     string
	CNIBinDir  string // default DefaultCNIBinDir
	CNIConfDir string // default DefaultCNIConfDir
	ConfName   string // default DefaultConfName
	// Conf is rendered into the conflist; its Socket is also where the
	// daemon's health is checked.
	Conf Options
	// WaitTimeout bounds the wait for the daemon to report SERVING (default
	// DefaultWaitTimeout); PollInterval spaces the checks (default
	// DefaultPollInterval).
	WaitTimeout  time.Duration
	PollInterval time.Duration
	// SkipBinaries installs only the conflist (the binaries must already be
	// in CNIBinDir); SkipConflist only copies the binaries and neither waits
	// for the daemon nor writes the conflist (the init container's job).
	SkipBinaries bool
	SkipConflist bool
	// Keep leaves other network configurations that sort before ours in
	// place (the runtime then uses the first of them, not ours: logged);
	// by default they are renamed to <name>.vpcchain-disabled once ours is
	// written (VPCCHAIN_CNI_EXCLUSIVE=false sets Keep).
	Keep bool
	// Kubeconfig is written to CNIConfDir/KubeconfigName (mode 0600) before
	// the conflist: policy-hook's credentials (see Kubeconfig). Required
	// when Conf.PolicyHook is set.
	Kubeconfig []byte
	// Logf, when set, receives one line per action.
	Logf func(format string, args ...any)
}

// Report says what Install did.
type Report struct {
	Installed []string // binaries written (new or changed content)
	Unchanged []string // binaries already identical
	Conflist  string   // path of the conflist
	// ConfWritten is true when the conflist was (re)written, false when it
	// was already identical (or SkipConflist); KubeconfigWritten the same
	// for policy-hook's kubeconfig.
	ConfWritten, KubeconfigWritten bool
	// SetAside are the other network configurations moved out of the way;
	// Shadowing those left in place that the runtime uses instead of ours.
	SetAside, Shadowing []string
}

func (o *InstallOptions) defaults() {
	if o.CNIBinDir == "" {
		o.CNIBinDir = DefaultCNIBinDir
	}
	if o.CNIConfDir == "" {
		o.CNIConfDir = DefaultCNIConfDir
	}
	if o.ConfName == "" {
		o.ConfName = DefaultConfName
	}
	if o.WaitTimeout <= 0 {
		o.WaitTimeout = DefaultWaitTimeout
	}
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
}

// Install copies the plugin binaries into the CNI bin dir, waits until the
// daemon reports SERVING, checks that every plugin of the chain is in the bin
// dir, and only then writes the conflist into the CNI conf dir. Every file is
// written atomically (temporary file in the target dir, fsync, chmod,
// rename, fsync of the dir) and only when its content differs, so a second
// Install is a no-op that leaves files and their mtimes alone. When the
// daemon does not become healthy within WaitTimeout, no conflist is written
// and the error says what the daemon last answered.
func Install(ctx context.Context, o InstallOptions) (Report, error) {
	o.defaults()
	var r Report
	conf, err := Render(o.Conf)
	if err != nil {
		return r, err
	}
	if !strings.HasSuffix(o.ConfName, ".conflist") || strings.ContainsRune(o.ConfName, '/') {
		return r, fmt.Errorf("conflist name %q is invalid: want a file name ending in .conflist", o.ConfName)
	}
	if !o.SkipBinaries {
		if o.BinSrc == "" {
			return r, errors.New("no binary source directory given")
		}
		if err := installBinaries(o, &r); err != nil {
			return r, err
		}
	}
	if o.SkipConflist {
		return r, nil
	}
	r.Conflist = filepath.Join(o.CNIConfDir, o.ConfName)
	if o.Conf.PolicyHook && len(o.Kubeconfig) == 0 {
		return r, fmt.Errorf("conflist %s not written: policy-hook is on and no kubeconfig was given for it", r.Conflist)
	}
	if err := checkPlugins(o.CNIBinDir, o.Conf.PluginTypes()); err != nil {
		return r, err
	}
	o.Logf("waiting up to %s for the daemon on %s to report SERVING", o.WaitTimeout, o.Conf.Socket)
	if err := WaitHealthy(ctx, o.Conf.Socket, o.WaitTimeout, o.PollInterval); err != nil {
		return r, fmt.Errorf("conflist %s not written: %w", r.Conflist, err)
	}
	if err := os.MkdirAll(o.CNIConfDir, 0o755); err != nil {
		return r, fmt.Errorf("CNI conf dir: %w", err)
	}
	cleanTmp(o.CNIConfDir)
	if o.Conf.PolicyHook {
		// Before the conflist: no ADD may find the hook without its credentials.
		kc := filepath.Join(o.CNIConfDir, KubeconfigName)
		w, err := writeIfChanged(kc, bytes.NewReader(o.Kubeconfig), kubeconfigMode)
		if err != nil {
			return r, fmt.Errorf("conflist %s not written: %w", r.Conflist, err)
		}
		r.KubeconfigWritten = w
		if w {
			o.Logf("wrote %s", kc)
		}
	}
	written, err := writeIfChanged(r.Conflist, bytes.NewReader(conf), confMode)
	if err != nil {
		return r, err
	}
	r.ConfWritten = written
	if written {
		o.Logf("wrote %s", r.Conflist)
	} else {
		o.Logf("%s is up to date", r.Conflist)
	}
	// A meta plugin's configuration an earlier install set aside goes back.
	back, _, err := restoreSetAside(o.CNIConfDir, func(name, path string) bool { return kindOf(path, name) == metaPlugin })
	if len(back) > 0 {
		o.Logf("restored %v: a meta plugin's configuration, which hands pods to the primary network, is never set aside", back)
	}
	if err != nil {
		o.Logf("WARNING: %v", err)
	}
	found, err := classify(o.CNIConfDir, o.ConfName)
	if err != nil {
		return r, fmt.Errorf("CNI conf dir: %w", err)
	}
	if l := found[metaPlugin]; len(l) > 0 {
		o.Logf("left %v in place: meta plugin configuration(s), which hand pods on to the primary network (ours)", l)
	}
	if l := found[notNetwork]; len(l) > 0 {
		o.Logf("WARNING: left %v in place: they sort before %s but are not network configurations vpcchain can read (a runtime may refuse them)", l, o.ConfName)
	}
	switch others := found[primary]; {
	case len(others) == 0:
	case o.Keep:
		r.Shadowing = others
		o.Logf("WARNING: %v sort(s) before %s: the runtime uses %s, not vpcchain (VPCCHAIN_CNI_EXCLUSIVE=false)", others, o.ConfName, others[0])
	default:
		if err := setAside(o.CNIConfDir, others); err != nil {
			return r, err
		}
		r.SetAside = others
		o.Logf("set aside %v (renamed to *%s): they sorted before %s, and the runtime uses the first", others, SetAsideSuffix, o.ConfName)
	}
	return r, nil
}

func installBinaries(o InstallOptions, r *Report) error {
	if err := os.MkdirAll(o.CNIBinDir, 0o755); err != nil {
		return fmt.Errorf("CNI bin dir: %w", err)
	}
	cleanTmp(o.CNIBinDir)
	var names []string
	for _, n := range requiredBinaries {
		if !isRegular(filepath.Join(o.BinSrc, n)) {
			return fmt.Errorf("binary %s missing from %s", n, o.BinSrc)
		}
		names = append(names, n)
	}
	for _, n := range optionalBinaries {
		if isRegular(filepath.Join(o.BinSrc, n)) {
			names = append(names, n)
		}
	}
	for _, n := range names {
		if err := installOne(filepath.Join(o.BinSrc, n), filepath.Join(o.CNIBinDir, n)); err != nil {
			if errors.Is(err, errUnchanged) {
				r.Unchanged = append(r.Unchanged, n)
				continue
			}
			return err
		}
		r.Installed = append(r.Installed, n)
		o.Logf("installed %s", filepath.Join(o.CNIBinDir, n))
	}
	return nil
}

var errUnchanged = errors.New("unchanged")

func installOne(src, dst string) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("binary source: %w", err)
	}
	defer f.Close()
	written, err := writeIfChanged(dst, f, binMode)
	if err != nil {
		return err
	}
	if !written {
		return errUnchanged
	}
	return nil
}

func isRegular(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// checkPlugins refuses to write a conflist naming a plugin the runtime
// would not find: every pod on the node would fail.
func checkPlugins(binDir string, types []string) error {
	var missing []string
	for _, t := range types {
		fi, err := os.Stat(filepath.Join(binDir, t))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("the chain needs plugin(s) %s, not found as executables in %s: install them (e.g. portmap from containernetworking/plugins) or pass them in the binary source dir",
			strings.Join(missing, ", "), binDir)
	}
	return nil
}

// writeIfChanged writes content to dst atomically unless dst already holds
// exactly that content with mode perm. It reports whether it wrote. A file
// whose content matches but whose mode differs is only chmod'ed (reported as
// written).
func writeIfChanged(dst string, content io.Reader, perm fs.FileMode) (bool, error) {
	data, err := io.ReadAll(content)
	if err != nil {
		return false, fmt.Errorf("%s: read source: %w", dst, err)
	}
	if fi, err := os.Lstat(dst); err == nil && fi.Mode().IsRegular() && fi.Size() == int64(len(data)) {
		old, err := os.ReadFile(dst)
		if err == nil && bytes.Equal(old, data) {
			if fi.Mode().Perm() == perm {
				return false, nil
			}
			if err := os.Chmod(dst, perm); err != nil {
				return false, fmt.Errorf("%s: %w", dst, err)
			}
			return true, nil
		}
	}
	return true, writeAtomic(dst, data, perm)
}

// writeAtomic writes data to a temporary file in dst's directory, fsyncs it,
// sets perm, renames it over dst and fsyncs the directory, so a reader sees
// the old file or the new one, never a part (also across a crash). Renaming
// over a running executable is safe: the old inode lives on.
func writeAtomic(dst string, data []byte, perm fs.FileMode) (err error) {
	dir, base := filepath.Split(dst)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+tmpMarker+"*")
	if err != nil {
		return fmt.Errorf("%s: %w", dst, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		return fmt.Errorf("%s: write: %w", dst, err)
	}
	if err = tmp.Chmod(perm); err != nil { // exact, whatever the umask
		return fmt.Errorf("%s: chmod: %w", dst, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("%s: fsync: %w", dst, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("%s: close: %w", dst, err)
	}
	if err = os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("%s: rename: %w", dst, err)
	}
	return syncDir(dir)
}

// syncDir makes renames in dir durable (best effort: some filesystems
// refuse fsync on a directory).
func syncDir(dir string) error {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// cleanTmp removes our temporary files left in dir by an install that died
// between create and rename. Nothing else is touched.
func cleanTmp(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") && strings.Contains(e.Name(), tmpMarker) && e.Type().IsRegular() {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// UninstallOptions say what Uninstall removes.
type UninstallOptions struct {
	CNIConfDir string // default DefaultCNIConfDir
	ConfName   string // default DefaultConfName
	// RemoveBinaries also removes OwnBinaries from CNIBinDir (default
	// DefaultCNIBinDir). Upstream plugins are left in place.
	RemoveBinaries bool
	CNIBinDir      string
	// Logf, when set, receives one line per action.
	Logf func(format string, args ...any)
}

// Uninstall puts back the network configurations the install set aside,
// then removes our conflist and policy-hook's kubeconfig (and, when asked,
// our binaries), and nothing else. Restoring first, the node is never
// without the configuration it had before vpcchain. A set-aside file whose
// name was written again since stays set aside. Files already gone are not
// an error.
func Uninstall(ctx context.Context, o UninstallOptions) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if o.CNIConfDir == "" {
		o.CNIConfDir = DefaultCNIConfDir
	}
	if o.ConfName == "" {
		o.ConfName = DefaultConfName
	}
	if o.CNIBinDir == "" {
		o.CNIBinDir = DefaultCNIBinDir
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if strings.ContainsRune(o.ConfName, '/') {
		return fmt.Errorf("conflist name %q is invalid: want a file name", o.ConfName)
	}
	var errs []error
	restored, kept, err := restoreSetAside(o.CNIConfDir, func(name, _ string) bool { return name != o.ConfName })
	if err != nil {
		// Ours goes all the same: with the daemon gone it would fail every pod.
		errs = append(errs, err)
	}
	if len(restored) > 0 {
		o.Logf("restored %v (set aside by the install)", restored)
	}
	if len(kept) > 0 {
		o.Logf("kept %v set aside as *%s: a file of that name was written since", kept, SetAsideSuffix)
	}
	rm := func(p string) {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	rm(filepath.Join(o.CNIConfDir, o.ConfName))
	rm(filepath.Join(o.CNIConfDir, KubeconfigName))
	cleanTmp(o.CNIConfDir)
	if o.RemoveBinaries {
		for _, n := range OwnBinaries {
			rm(filepath.Join(o.CNIBinDir, n))
		}
		cleanTmp(o.CNIBinDir)
	}
	return errors.Join(errs...)
}
