//go:build peer

package e2e

// What TestChaosSideBySide measures of each system, and its table.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/vpcchain/vpcchain/daemon/cloud"
	"github.com/vpcchain/vpcchain/internal/ipamclient"
)

// measureSystem fills a tally with what the system's pods and pools show
// now: pods whose address is gone (from the pod or from the daemon) or
// that reach nothing, addresses on two live pods or not on their node's
// ENIs, ENIs left unattached, addresses idle above target, where the
// daemon's view is not EC2's. Pods and ENIs already counted in an earlier
// round are not counted again; each finding is logged.
func measureSystem(t *testing.T, c *cluster, everyone []*chaosNode, sys *chaosSystem, ct *chaosTally, round string) {
	t.Helper()
	logf := func(format string, args ...any) {
		t.Logf("round %q: %s: "+format, append([]any{round, sys.name}, args...)...)
	}
	firstTime := func(key string) bool {
		if sys.lost[key] {
			return false
		}
		sys.lost[key] = true
		return true
	}
	holders := map[netip.Addr][]*pod{}
	for _, cn := range everyone {
		for _, p := range cn.live() {
			holders[p.ip] = append(holders[p.ip], p)
		}
	}
	instances := map[string]bool{}
	for _, cn := range sys.nodes {
		instances[cn.n.vn.InstanceID] = true
		v, verr := sys.view(cn)
		for _, p := range cn.live() {
			got, err := p.podAddr()
			switch {
			case err != nil || got != p.ip:
				if firstTime("addr " + p.id) {
					ct.lostAddr++
				}
				logf("%s on %s: ADD gave %s, the pod has %s (%v)", p.name, cn.n.name, p.ip, got, err)
			case verr == nil && v.assigned[p.ip.String()] != sys.holder(p):
				if firstTime("addr " + p.id) {
					ct.lostAddr++
				}
				logf("%s on %s uses %s, which the daemon holds for %q", p.name, cn.n.name, p.ip, v.assigned[p.ip.String()])
			}
			if len(holders[p.ip]) > 1 && firstTime("twice "+p.id) {
				ct.twice++
				logf("%s on %s uses %s, as do %d other live pods", p.name, cn.n.name, p.ip, len(holders[p.ip])-1)
			}
			if !onENIs(c.sim, cn.n, p.ip) && firstTime("ec2 "+p.id) {
				ct.notInEC2++
				logf("%s on %s uses %s, which EC2 has not assigned to the node", p.name, cn.n.name, p.ip)
			}
		}
		if verr != nil {
			ct.viewDiff++
			logf("no view of %s's daemon: %v", cn.n.name, verr)
		} else {
			d := viewDiff(c, cn, v)
			ct.viewDiff += len(d)
			for _, s := range d {
				logf("%s: %s", cn.n.name, s)
			}
		}
		if extra := idleAbove(c, cn); extra > 0 {
			ct.idleAbove += extra
			logf("EC2 has %d addresses on %s for %d live pods: %d idle above the targets", len(secondaryOf(c, cn)), cn.n.name,
				len(cn.live()), extra)
		}
	}
	for _, u := range unreachable(sys.nodes, 3*time.Second) {
		if firstTime("conn " + strings.Fields(u)[0]) {
			ct.lostConn++
		}
		logf("%s", u)
	}
	for _, e := range c.sim.Cloud.ENIs() {
		if (e.Status != "in-use" || e.InstanceID == "") && instances[e.Tags[cloud.TagInstanceID]] && !sys.leaked[e.ID] {
			sys.leaked[e.ID] = true
			ct.leakedENIs++
			logf("%s is %s, attached to no instance (tags %v)", e.ID, e.Status, e.Tags)
		}
	}
}

// viewDiff lists where the daemon's view of the node's ENIs and addresses
// differs from EC2's.
func viewDiff(c *cluster, cn *chaosNode, v daemonView) []string {
	inet, _ := c.sim.Cloud.InstanceNetwork(cn.n.vn.InstanceID)
	var out []string
	ec2 := map[string][]string{}
	for _, e := range inet.ENIs {
		var want []string
		for _, a := range e.Secondary {
			want = append(want, a.String())
		}
		for _, p := range e.Prefixes {
			for a := p.Addr(); p.Contains(a); a = a.Next() {
				want = append(want, a.String())
			}
		}
		sort.Strings(want)
		ec2[e.ID] = want
	}
	for id, got := range v.enis {
		want, ok := ec2[id]
		if !ok {
			out = append(out, fmt.Sprintf("the daemon manages %s, which EC2 has not attached to the node", id))
			continue
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			out = append(out, fmt.Sprintf("%s: the daemon knows addresses %v, EC2 has %v", id, got, want))
		}
	}
	for id := range ec2 {
		if _, ok := v.enis[id]; !ok {
			out = append(out, fmt.Sprintf("EC2 attached %s, unknown to the daemon", id))
		}
	}
	sort.Strings(out)
	return out
}

// ourView is our daemon's introspection as a daemonView.
func ourView(n *node) (daemonView, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl, err := ipamclient.Dial(ctx, n.socket)
	if err != nil {
		return daemonView{}, fmt.Errorf("dial %s's daemon: %w", n.name, err)
	}
	defer cl.Close()
	r, err := cl.Introspect(ctx)
	if err != nil {
		return daemonView{}, fmt.Errorf("introspect %s: %w", n.name, err)
	}
	v := daemonView{enis: map[string][]string{}, assigned: map[string]string{}}
	for _, e := range r.Enis {
		addrs := append([]string(nil), e.Ips...)
		for _, p := range e.Prefixes {
			pf, err := netip.ParsePrefix(p)
			if err != nil {
				return daemonView{}, fmt.Errorf("introspect %s: prefix %q: %w", n.name, p, err)
			}
			for a := pf.Addr(); pf.Contains(a); a = a.Next() {
				addrs = append(addrs, a.String())
			}
		}
		sort.Strings(addrs)
		v.enis[e.Id] = addrs
	}
	for _, a := range r.Allocations {
		v.assigned[a.Ip] = a.Key.ContainerId
	}
	return v, nil
}

// peerView is the peer's introspection (/v1/enis) as a daemonView.
func peerView(pn *peerNode) (daemonView, error) {
	body, err := httpGetIn(pn.node, "127.0.0.1:61679", "/v1/enis")
	if err != nil {
		return daemonView{}, fmt.Errorf("ipamd introspection on %s: %w", pn.name, err)
	}
	i := strings.Index(body, "{")
	if i < 0 {
		return daemonView{}, fmt.Errorf("ipamd introspection on %s: %q", pn.name, body)
	}
	var cards map[string]struct {
		ENIs map[string]struct {
			AvailableIPv4Cidrs map[string]struct {
				IPAddresses map[string]struct {
					Address string
					// Introspection blanks the container ID: the pod's
					// name tells the holder instead. An assigned
					// address's key names its network.
					IPAMKey struct {
						NetworkName string `json:"networkName"`
					}
					IPAMMetadata struct {
						Namespace string `json:"k8sPodNamespace"`
						Name      string `json:"k8sPodName"`
					}
				}
			}
		}
	}
	if err := json.Unmarshal([]byte(body[i:]), &cards); err != nil {
		return daemonView{}, fmt.Errorf("ipamd introspection on %s: %w", pn.name, err)
	}
	card, ok := cards["0"]
	if !ok {
		return daemonView{}, errors.New("ipamd introspection: no network card 0")
	}
	v := daemonView{enis: map[string][]string{}, assigned: map[string]string{}}
	for id, e := range card.ENIs {
		addrs := []string{}
		for key, cidr := range e.AvailableIPv4Cidrs {
			// An address has an entry once assigned; the key is the
			// secondary address (/32) or prefix.
			pf, err := netip.ParsePrefix(key)
			if err != nil {
				return daemonView{}, fmt.Errorf("ipamd introspection on %s: %q: %w", pn.name, key, err)
			}
			for a := pf.Masked().Addr(); pf.Contains(a); a = a.Next() {
				addrs = append(addrs, a.String())
			}
			for _, a := range cidr.IPAddresses {
				if a.IPAMKey.NetworkName != "" {
					v.assigned[a.Address] = a.IPAMMetadata.Namespace + "/" + a.IPAMMetadata.Name
				}
			}
		}
		sort.Strings(addrs)
		v.enis[id] = addrs
	}
	return v, nil
}

type tallyRow struct {
	round, system string
	t             *chaosTally
}

// logTallies logs rows as a table.
func logTallies(t *testing.T, title string, rows []tallyRow) {
	t.Helper()
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 1, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "round\tsystem\tADD failed\tDEL failed\tnot serving\tdaemon exits\tback after kill\thanded twice\tnot in EC2\tlost address\tlost connectivity\tleaked ENIs\tidle above target\tview != EC2\trecovered in\t")
	for _, r := range rows {
		rec := fmt.Sprintf("> %s", r.t.waited)
		if r.t.settled {
			rec = r.t.recovered.Round(100 * time.Millisecond).String()
		}
		back := "-"
		if r.t.restart > 0 {
			back = r.t.restart.Round(100 * time.Millisecond).String()
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t\n", r.round, r.system, r.t.addFailed, r.t.delFailed,
			r.t.notServing, r.t.exits, back, r.t.twice, r.t.notInEC2, r.t.lostAddr, r.t.lostConn, r.t.leakedENIs, r.t.idleAbove, r.t.viewDiff, rec)
	}
	w.Flush()
	t.Logf("%s:\n%s", title, b.String())
}

// linesIn returns the lines of the file at path that contain s.
func linesIn(path, s string) string {
	b, _ := os.ReadFile(path)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
