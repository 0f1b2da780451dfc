// Command basalt runs a member of a basalt cluster, a replicated key-value
// store that speaks etcd's v3 API, or the simulator of a whole cluster.
//
//	basalt [etcd flags]   run a member (etcd's flags and defaults)
//	basalt sim [flags]    run the deterministic cluster simulator
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/basaltdb/basalt/server"
	"github.com/basaltdb/basalt/sim"
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "sim" {
		os.Exit(runSim(args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(server.Run(args, os.Stdout, os.Stderr))
}

// runSim is `basalt sim`: it runs seeds one after the other in this
// process (raft's jitter source is process-wide) and prints one line per
// seed; a failing seed also prints what broke and how to replay it.
func runSim(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("basalt sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	seed := fs.Uint64("seed", 0, "run this seed, printing its options first")
	seeds := fs.String("seeds", "", "run the seeds `A-B` (inclusive), one line each")
	var bugs sim.Bugs
	fs.Func("bug", "plant a bug for the checkers to catch: "+strings.Join(sim.BugNames, ", ")+" (repeatable)", bugs.SetBug)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: basalt sim --seed N | --seeds A-B [--bug NAME]...")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	lo, hi := *seed, *seed
	verbose := true
	if *seeds != "" {
		a, b, ok := strings.Cut(*seeds, "-")
		var errA, errB error
		lo, errA = strconv.ParseUint(a, 10, 64)
		hi, errB = strconv.ParseUint(b, 10, 64)
		if !ok || errA != nil || errB != nil || hi < lo {
			fmt.Fprintf(stderr, "basalt sim: --seeds %q: want A-B with A <= B\n", *seeds)
			return 2
		}
		verbose = false
	} else if !flagSet(fs, "seed") {
		fs.Usage()
		return 2
	}
	failed := 0
	for s := lo; ; s++ {
		opts := sim.Draw(s)
		opts.Bugs = bugs
		if verbose {
			fmt.Fprintln(stdout, opts)
		}
		restore := sim.SeedCryptoRand(s)
		res := sim.Run(opts)
		restore()
		fmt.Fprintln(stdout, res.Line())
		if res.Failure != nil {
			failed++
			replay := fmt.Sprintf("basalt sim --seed %d", s)
			if bugs != (sim.Bugs{}) {
				replay += " --bug " + strings.ReplaceAll(bugs.String(), ",", " --bug ")
			}
			fmt.Fprintf(stdout, "  replay: %s\n", replay)
		}
		if s == hi {
			break
		}
	}
	if failed > 0 {
		if lo != hi {
			fmt.Fprintf(stdout, "%d of %d seeds failed\n", failed, hi-lo+1)
		}
		return 1
	}
	return 0
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
