package node

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
)

// benchIncrements drives increments through the Worker's Env (no HTTP)
// from 64 goroutines over names objects, so the runtime and storage path
// are measured without the HTTP server in the way.
func benchIncrements(b *testing.B, names int) {
	n := startNode(b, b.TempDir(), func(c *Config, _ *Node) {
		c.Shards = 16
		if v, err := strconv.Atoi(os.Getenv("ROOST_BENCH_INFLIGHT")); err == nil {
			c.MaxInflightPerShard = v // for tuning runs
		}
	})
	defer closeNode(b, n)
	ns, err := n.Env().Namespace("COUNTER")
	if err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	b.SetParallelism(32) // × GOMAXPROCS(2) = 64 concurrent clients
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1)
			id := ns.IDFromName(fmt.Sprint("bench-", i%int64(names)))
			req, _ := http.NewRequest("GET", "http://do/increment", nil)
			resp, err := ns.Get(id).Fetch(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "increments/s")
}

func BenchmarkIncrementOneObject(b *testing.B)       { benchIncrements(b, 1) }
func BenchmarkIncrementThousandObjects(b *testing.B) { benchIncrements(b, 1000) }
