package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/vpcchain/vpcchain/internal/instancelimits"
	"github.com/vpcchain/vpcchain/internal/maxpods"
)

func cmdMaxPods(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("vpcctl max-pods", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		typ = fs.String("instance-type", "", "EC2 instance type, e.g. m5.large")
		all = fs.Bool("all", false, "print a table for every instance type of the embedded table")
		o   maxpods.Options
	)
	fs.BoolVar(&o.PrefixDelegation, "prefix-delegation", false, "/28 prefix delegation (Nitro-based or bare-metal types only)")
	fs.BoolVar(&o.CustomNetworking, "custom-networking", false, "custom networking: pods do not use the primary ENI")
	fs.IntVar(&o.MaxENI, "max-eni", 0, "use at most `N` ENIs (0: the type's limit)")
	fs.BoolVar(&o.CNICap, "cni-cap", false, "apply the recommended cap: 110 for types with up to 30 vCPUs, 250 above")
	fs.BoolVar(&o.IPv6, "ipv6", false, "IPv6 mode (ENABLE_IPv6=true): what the daemon serves, the prefix-delegation figure with the recommended cap")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if (*typ == "") == !*all {
		fmt.Fprintln(stderr, "vpcctl max-pods: give exactly one of --instance-type or --all")
		fs.Usage()
		return errUsage
	}
	if o.MaxENI < 0 {
		fmt.Fprintln(stderr, "vpcctl max-pods: --max-eni must not be negative")
		return errUsage
	}
	if *all {
		return printMaxPodsTable(stdout, o)
	}
	r, err := maxpods.Compute(*typ, o)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, r.MaxPods)
	return nil
}

// printMaxPodsTable prints the max pods of every known type; types that do
// not support prefix delegation show "n/a" when it is asked for.
func printMaxPodsTable(w io.Writer, o maxpods.Options) error {
	if err := instancelimits.Err(); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	header := "INSTANCE-TYPE\tENIS\tIPV4/ENI\tMAX-PODS"
	if o.CNICap || o.IPv6 {
		header += "\tUNCAPPED\tCAP"
	}
	fmt.Fprintln(tw, header)
	for _, typ := range instancelimits.Types() {
		r, err := maxpods.Compute(typ, o)
		if errors.Is(err, maxpods.ErrPrefixDelegationUnsupported) || errors.Is(err, maxpods.ErrIPv6Unsupported) {
			l, _ := instancelimits.Lookup(typ)
			fmt.Fprintf(tw, "%s\t%d\t%d\tn/a", typ, l.MaxENIs, l.IPv4PerENI)
			if o.CNICap || o.IPv6 {
				fmt.Fprint(tw, "\tn/a\tn/a")
			}
			fmt.Fprintln(tw)
			continue
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d", typ, r.ENIs, r.IPv4PerENI, r.MaxPods)
		if o.CNICap || o.IPv6 {
			fmt.Fprintf(tw, "\t%d\t%d", r.Uncapped, r.Cap)
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}
