package maxpods

import (
	"errors"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/vpcchain/vpcchain/internal/instancelimits"
)

func TestCompute(t *testing.T) {
	tests := []struct {
		name string
		typ  string
		o    Options
		want int
	}{
		{"m5.large secondary", "m5.large", Options{}, 29},
		{"t3.medium secondary", "t3.medium", Options{}, 17},
		{"c5.18xlarge secondary", "c5.18xlarge", Options{}, 737},
		{"t2.micro secondary", "t2.micro", Options{}, 4},
		{"t3.small secondary", "t3.small", Options{}, 11},
		{"m5.xlarge secondary", "m5.xlarge", Options{}, 58},
		{"m5.4xlarge secondary", "m5.4xlarge", Options{}, 234},
		// Multi-card types count the default card only (eni-max-pods.txt:
		// p4d.24xlarge 737, c6in.32xlarge 394, trn1.32xlarge 247,
		// p5.48xlarge 100).
		{"p4d.24xlarge secondary (4 cards)", "p4d.24xlarge", Options{}, 737},
		{"c6in.32xlarge secondary (2 cards)", "c6in.32xlarge", Options{}, 394},
		{"trn1.32xlarge secondary (8 cards)", "trn1.32xlarge", Options{}, 247},
		{"p5.48xlarge secondary (32 cards)", "p5.48xlarge", Options{}, 100},

		{"m5.large prefix", "m5.large", Options{PrefixDelegation: true}, 434},
		{"m5.large prefix capped", "m5.large", Options{PrefixDelegation: true, CNICap: true}, 110},
		{"t3.medium prefix", "t3.medium", Options{PrefixDelegation: true}, 242},
		{"m5.xlarge prefix", "m5.xlarge", Options{PrefixDelegation: true}, 898},
		{"c5.18xlarge prefix", "c5.18xlarge", Options{PrefixDelegation: true}, 11762},
		{"c5.18xlarge prefix capped", "c5.18xlarge", Options{PrefixDelegation: true, CNICap: true}, 250},
		{"c5.metal prefix (bare metal)", "c5.metal", Options{PrefixDelegation: true}, 11762},

		{"m5.large custom", "m5.large", Options{CustomNetworking: true}, 20},
		{"t3.medium custom", "t3.medium", Options{CustomNetworking: true}, 12},
		{"m5.4xlarge custom", "m5.4xlarge", Options{CustomNetworking: true}, 205},
		{"c5.18xlarge custom", "c5.18xlarge", Options{CustomNetworking: true}, 688},
		{"t2.micro custom", "t2.micro", Options{CustomNetworking: true}, 3},

		{"m5.large max-eni 2", "m5.large", Options{MaxENI: 2}, 20},
		{"m5.large max-eni 9 (above limit)", "m5.large", Options{MaxENI: 9}, 29},
		{"m5.large max-eni 2 custom", "m5.large", Options{MaxENI: 2, CustomNetworking: true}, 11},

		{"m5.large capped", "m5.large", Options{CNICap: true}, 29},
		{"t2.micro capped", "t2.micro", Options{CNICap: true}, 4},
		{"c5.18xlarge capped", "c5.18xlarge", Options{CNICap: true}, 250},
		{"m5.4xlarge capped (16 vCPU)", "m5.4xlarge", Options{CNICap: true}, 110},
		{"c5.9xlarge capped (36 vCPU)", "c5.9xlarge", Options{CNICap: true}, 234},
		{"m5.8xlarge prefix capped (32 vCPU)", "m5.8xlarge", Options{PrefixDelegation: true, CNICap: true}, 250},
		{"c5.metal prefix capped", "c5.metal", Options{PrefixDelegation: true, CNICap: true}, 250},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Compute(tt.typ, tt.o)
			if err != nil {
				t.Fatal(err)
			}
			if r.MaxPods != tt.want {
				t.Errorf("Compute(%s, %+v) = %d (%+v), want %d", tt.typ, tt.o, r.MaxPods, r, tt.want)
			}
		})
	}
}

func TestPrefixDelegationNeedsNitro(t *testing.T) {
	_, err := Compute("t2.micro", Options{PrefixDelegation: true})
	if !errors.Is(err, ErrPrefixDelegationUnsupported) {
		t.Fatalf("t2.micro prefix delegation: err = %v, want ErrPrefixDelegationUnsupported", err)
	}
}

func TestNegativeMaxENI(t *testing.T) {
	if _, err := Compute("m5.large", Options{MaxENI: -1}); err == nil {
		t.Fatal("MaxENI -1: want an error")
	}
}

func TestUnknownType(t *testing.T) {
	_, err := Compute("m5.larg", Options{})
	var ute *UnknownTypeError
	if !errors.As(err, &ute) {
		t.Fatalf("err = %v, want *UnknownTypeError", err)
	}
	if len(ute.Suggestions) == 0 || len(ute.Suggestions) > 5 || ute.Suggestions[0] != "m5.large" {
		t.Errorf("suggestions = %v, want m5.large first, at most 5", ute.Suggestions)
	}
	if want := `unknown instance type "m5.larg" (did you mean m5.large`; len(err.Error()) < len(want) || err.Error()[:len(want)] != want {
		t.Errorf("message = %q", err.Error())
	}
}

func TestEstimateVCPUs(t *testing.T) {
	tests := []struct {
		typ  string
		want int
		ok   bool
	}{
		{"m5.large", 2, true},
		{"m5.xlarge", 4, true},
		{"m5.4xlarge", 16, true},
		{"c5.18xlarge", 72, true},
		{"c5.metal", 96, true}, // as c5.24xlarge
		{"a1.metal", 16, true}, // as a1.4xlarge
		{"m7i.metal-48xl", 192, true},
		{"hpc7a.12xlarge", 24, true}, // exception
		{"mac1.metal", 0, false},
	}
	for _, tt := range tests {
		got, ok := EstimateVCPUs(tt.typ)
		if got != tt.want || ok != tt.ok {
			t.Errorf("EstimateVCPUs(%s) = %d, %v; want %d, %v", tt.typ, got, ok, tt.want, tt.ok)
		}
	}
	if CapFor(0) != SmallCap || CapFor(30) != SmallCap || CapFor(32) != LargeCap {
		t.Error("CapFor: want 110 up to 30 vCPUs (and unknown), 250 above")
	}
}

// Every type of the table computes, and the secondary-IP count is the
// eni-max-pods.txt formula. The expected values come from the table file
// itself, read here as data (not through package instancelimits, whose
// parsed Limits and SupportsPrefixDelegation are what Compute uses): max
// ENIs x (IPv4 per ENI - 1) + 2, and prefix delegation exactly where EC2
// documents it, on Nitro-based (hypervisor "nitro") or bare-metal types.
func TestAllTypes(t *testing.T) {
	rows := limitsTable(t)
	if len(rows) < 1000 || len(rows) != len(instancelimits.Types()) {
		t.Fatalf("%d rows in the table file, %d types known", len(rows), len(instancelimits.Types()))
	}
	for _, row := range rows {
		r, err := Compute(row.typ, Options{CNICap: true})
		if err != nil {
			t.Fatalf("%s: %v", row.typ, err)
		}
		if want := row.enis*(row.ipv4-1) + 2; r.Uncapped != want {
			t.Errorf("%s: %d, want %d", row.typ, r.Uncapped, want)
		}
		if r.MaxPods > r.Cap || !slices.Contains([]int{SmallCap, LargeCap}, r.Cap) {
			t.Errorf("%s: bad cap %+v", row.typ, r)
		}
		_, err = Compute(row.typ, Options{PrefixDelegation: true})
		if wantPD := row.hypervisor == "nitro" || row.bareMetal; (err == nil) != wantPD {
			t.Errorf("%s (hypervisor %q, bare metal %v): prefix delegation err = %v, want supported = %v",
				row.typ, row.hypervisor, row.bareMetal, err, wantPD)
		}
	}
}

type tableRow struct {
	typ, hypervisor string
	enis, ipv4      int
	bareMetal       bool
}

// limitsTable reads internal/instancelimits/instance-limits.tsv as data:
// instance_type, max_enis, ipv4_per_eni, hypervisor, bare_metal, ...
func limitsTable(t *testing.T) []tableRow {
	t.Helper()
	data, err := os.ReadFile("../instancelimits/instance-limits.tsv")
	if err != nil {
		t.Fatal(err)
	}
	var rows []tableRow
	for i, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Split(line, "\t")
		if i == 0 {
			if strings.Join(f[:5], ",") != "instance_type,max_enis,ipv4_per_eni,hypervisor,bare_metal" {
				t.Fatalf("unexpected header %q", line)
			}
			continue
		}
		enis, err1 := strconv.Atoi(f[1])
		ipv4, err2 := strconv.Atoi(f[2])
		if err1 != nil || err2 != nil {
			t.Fatalf("line %d: %q", i+1, line)
		}
		rows = append(rows, tableRow{typ: f[0], enis: enis, ipv4: ipv4, hypervisor: f[3], bareMetal: f[4] == "true"})
	}
	return rows
}
