// Command basalt runs a member of a basalt cluster, a replicated key-value
// store that speaks etcd's v3 API, or the simulator of a whole cluster.
//
//	basalt [etcd flags]   run a member (etcd's flags and defaults)
//	basalt sim [flags]    run the deterministic cluster simulator
package main

import (
	"fmt"
	"os"

	"github.com/basaltdb/basalt/server"
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "sim" {
		fmt.Fprintln(os.Stderr, "basalt sim: the simulator is not built yet")
		os.Exit(2)
	}
	os.Exit(server.Run(args, os.Stdout, os.Stderr))
}
