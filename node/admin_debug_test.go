package node

import (
	"fmt"
	"time"
)

func (c *testCluster) watchMeta(stop <-chan struct{}) {
	last := map[int]string{}
	for {
		select {
		case <-stop:
			return
		case <-time.After(5 * time.Millisecond):
		}
		for i, nd := range c.nodes {
			if nd == nil {
				continue
			}
			r := nd.cluster.metaRaft()
			if r == nil {
				continue
			}
			_, id := r.LeaderWithID()
			s := fmt.Sprintf("%s leader=%s", r.State(), id)
			if last[i] != s {
				c.t.Logf("%s meta n%d: %s", time.Now().Format("15:04:05.000"), i+1, s)
				last[i] = s
			}
		}
	}
}
