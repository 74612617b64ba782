package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

const usage = `usage: vpcctl <command> [flags]

commands:
  max-pods   max pods of an EC2 instance type (or --all types)
  status     summary of the warm-pool daemon's addresses and allocations

Run "vpcctl <command> -h" for a command's flags.
`

// errUsage marks errors already explained by a usage message (exit code 2).
var errUsage = errors.New("usage error")

// run executes the CLI and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "max-pods":
		err = cmdMaxPods(args[1:], stdout, stderr)
	case "status":
		err = cmdStatus(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "vpcctl: unknown command %q\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	default:
		fmt.Fprintf(stderr, "vpcctl %s: %v\n", args[0], err)
		return 1
	}
}

// parseFlags parses a subcommand's flags; a parse error (already printed by
// the FlagSet) or stray arguments are errUsage.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected arguments: %v\n", fs.Args())
		fs.Usage()
		return errUsage
	}
	return nil
}
