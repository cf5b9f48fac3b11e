// Command rebalance measures how long a roost cluster takes to spread its
// shards onto a new node, and what the writes see meanwhile. It is a
// measurement tool, not a test, for the "Rebalance figures" of
// docs/operations.md:
//
//  1. It starts three `roost node` processes of -bin (normally bin/roost
//     from `make build`, which serves the example counter) on 127.0.0.1
//     with --shards 64 --replicas 3 --bootstrap-expect 3, each with free
//     ports and a temporary data dir, and waits for /readyz on all three.
//  2. It fills -objects counter objects: one acknowledged increment each
//     (GET /increment?name=rb-<i> on the app port), so every object has a
//     value in storage and every shard holds about objects/64 of them.
//  3. It starts a fourth node that joins the three and waits until the map
//     lists it as an active member.
//  4. Under a closed-loop load of -c workers incrementing the objects in
//     turn (worker w through node w mod 3 of the first three), after
//     -before of steady load it runs `roost rebalance --wait -o json
//     --max-concurrent N` (the CLI of -bin against node 1's admin API),
//     and keeps the load on for -after once the operation is done. If the
//     command fails (the operation is lost when the meta leadership moves),
//     it starts it again, up to -restarts times; the report lists why.
//  5. It reads every object back and checks that no acknowledged increment
//     was lost: each count is at least the object's acknowledged
//     increments and at most those plus the increments whose outcome is
//     unknown (any answer but a 200, or none); with no unknown outcomes the
//     two bounds are equal. A violation makes it exit 1.
//
// The report gives the rebalance time (the CLI's start to its exit), the
// moves the operation made, successful writes per second, the longest time
// without any successful write (cluster-wide and per shard, where the
// target of the issue is 2 s), failed writes by kind and latency
// percentiles before, during and after the move.
//
// Run it with `make bench-rebalance` (REBALANCE_FLAGS='-max-concurrent 1 -v'
// passes flags) or, after `make build`, with
//
//	go run ./internal/cmd/rebalance -bin bin/roost
//
// It needs Linux (/proc/loadavg).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

var (
	binPath       = flag.String("bin", "bin/roost", "the roost binary to run")
	objects       = flag.Int("objects", 10000, "counter objects filled before the move and written during it")
	concurrency   = flag.Int("c", 32, "load workers, each with one increment in flight")
	maxConcurrent = flag.Int("max-concurrent", 4, "--max-concurrent of roost rebalance: moves in progress at once")
	shards        = flag.Int("shards", 64, "--shards of the cluster")
	restarts      = flag.Int("restarts", 2, "times to start roost rebalance again if it fails (a meta leader change loses the operation)")
	before        = flag.Duration("before", 10*time.Second, "steady load before the rebalance starts")
	after         = flag.Duration("after", 5*time.Second, "load after the rebalance is done")
	target        = flag.Duration("target", 2*time.Second, "longest acceptable time without a successful write")
	jsonOut       = flag.Bool("json", false, "print the report as JSON")
	keep          = flag.Bool("keep", false, "keep the nodes' data dirs and logs")
	verbose       = flag.Bool("v", false, "the rebalance's progress as it goes, every shard's longest gap, the timeline in 100 ms buckets around each gap over -target")
)

func main() {
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: rebalance [flags]\n\nMeasures `roost rebalance` onto a fourth node under load, and checks no acknowledged write is lost.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "rebalance:", err)
		os.Exit(1)
	}
}
