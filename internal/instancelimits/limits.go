// Package instancelimits holds EC2's per-instance-type network limits (max
// ENIs, IPv4 addresses per ENI, hypervisor, ENI trunking) as an embedded table, shared by
// the VPC simulator, the daemon (which asks DescribeInstanceTypes only for a
// type the table lacks) and the max-pods calculator.
package instancelimits

import (
	"bufio"
	_ "embed"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
)

//go:embed instance-limits.tsv
var table string

// Limits are the network limits of one instance type.
type Limits struct {
	InstanceType string
	// MaxENIs is the number of ENIs on the default network card: what
	// the daemon can attach for pods (it uses that card only), as the AWS
	// VPC CNI counts them. EC2's MaximumNetworkInterfaces is the instance's
	// total (TotalENIs).
	MaxENIs int
	// IPv4PerENI counts every IPv4 slot of an ENI, its primary address
	// included; a /28 prefix takes one slot.
	IPv4PerENI int
	// Hypervisor is "nitro", "xen" or "" when EC2 reports none.
	Hypervisor string
	BareMetal  bool
	// DefaultNetworkCard is the index of the default network card.
	DefaultNetworkCard int
	// NetworkCards maps card index to its ENI limit.
	NetworkCards map[int]int
	// TrunkingCompatible is whether the type takes a trunk ENI with
	// branch ENIs associated (EC2's ENI trunking); BranchInterfaces is how
	// many branches one trunk takes. A type the trunking table does not
	// list (an empty cell) is taken as not compatible, with none.
	TrunkingCompatible bool
	BranchInterfaces   int
}

// TotalENIs is the number of ENIs the instance can attach over all its
// network cards: EC2's NetworkInfo.MaximumNetworkInterfaces.
func (l Limits) TotalENIs() int {
	if len(l.NetworkCards) == 0 {
		return l.MaxENIs
	}
	n := 0
	for _, m := range l.NetworkCards {
		n += m
	}
	return n
}

// SupportsPrefixDelegation reports whether EC2 lets this type hold /28
// prefixes: Nitro-based or bare metal, as EC2 documents.
func (l Limits) SupportsPrefixDelegation() bool {
	return l.Hypervisor == "nitro" || l.BareMetal
}

var (
	once   sync.Once
	byType map[string]Limits
	names  []string
	perr   error
)

func load() {
	byType = map[string]Limits{}
	sc := bufio.NewScanner(strings.NewReader(table))
	line := 0
	for sc.Scan() {
		line++
		if line == 1 || strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		f := strings.Split(sc.Text(), "\t")
		if len(f) < 7 {
			perr = fmt.Errorf("instance-limits.tsv line %d: %d fields, want >= 7", line, len(f))
			return
		}
		enis, err1 := strconv.Atoi(f[1])
		ips, err2 := strconv.Atoi(f[2])
		def, err3 := strconv.Atoi(f[5])
		if err1 != nil || err2 != nil || err3 != nil {
			perr = fmt.Errorf("instance-limits.tsv line %d: bad number", line)
			return
		}
		hv := f[3]
		if hv == "unknown" {
			hv = ""
		}
		l := Limits{InstanceType: f[0], MaxENIs: enis, IPv4PerENI: ips, Hypervisor: hv,
			BareMetal: f[4] == "true", DefaultNetworkCard: def, NetworkCards: map[int]int{}}
		if len(f) >= 9 && f[7] == "true" {
			branches, err := strconv.Atoi(f[8])
			if err != nil {
				perr = fmt.Errorf("instance-limits.tsv line %d: bad branch_interface %q", line, f[8])
				return
			}
			l.TrunkingCompatible, l.BranchInterfaces = true, branches
		}
		for _, c := range strings.Split(f[6], ";") {
			idx, n, ok := strings.Cut(c, ":")
			if !ok {
				continue
			}
			i, e1 := strconv.Atoi(idx)
			m, e2 := strconv.Atoi(n)
			if e1 == nil && e2 == nil {
				l.NetworkCards[i] = m
			}
		}
		byType[l.InstanceType] = l
		names = append(names, l.InstanceType)
	}
	sort.Strings(names)
}

// Lookup returns the limits of an instance type.
func Lookup(instanceType string) (Limits, bool) {
	once.Do(load)
	l, ok := byType[instanceType]
	return l, ok
}

// Types lists every known instance type, sorted.
func Types() []string {
	once.Do(load)
	return append([]string(nil), names...)
}

// Err reports a problem parsing the embedded table (nil in a good build).
func Err() error {
	once.Do(load)
	return perr
}

// Similar returns up to n known types closest to name (same family first,
// then by edit distance), for "unknown instance type" errors.
func Similar(name string, n int) []string {
	once.Do(load)
	type cand struct {
		t string
		d int
	}
	family, _, _ := strings.Cut(name, ".")
	var cs []cand
	for _, t := range names {
		d := editDistance(name, t)
		if f, _, _ := strings.Cut(t, "."); f == family {
			d -= 100
		}
		cs = append(cs, cand{t, d})
	}
	sort.SliceStable(cs, func(i, j int) bool { return cs[i].d < cs[j].d })
	var out []string
	for i := 0; i < len(cs) && i < n; i++ {
		out = append(out, cs[i].t)
	}
	return out
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
