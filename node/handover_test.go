package node

import (
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// TestHandOverAvoidsADeadVoter: a leader leaving its group hands the
// leadership to a voter that answers (handOverTarget). Raft's own choice,
// LeadershipTransfer without a target, is the voter replication has sent
// the furthest, the first in the configuration on a tie: in a quiet group
// whose first follower died after the last entry, it picked the dead one
// every time, and the hand-over failed after the election timeout.
func TestHandOverAvoidsADeadVoter(t *testing.T) {
	const n = 3
	var (
		rafts  [n]*raft.Raft
		trans  [n]*raft.InmemTransport
		config raft.Configuration
	)
	for i := range n {
		addr, tr := raft.NewInmemTransport(raft.ServerAddress(fmt.Sprintf("r%d", i)))
		trans[i] = tr
		config.Servers = append(config.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(fmt.Sprintf("r%d", i)), Address: addr})
	}
	for i := range n {
		for j := range n {
			if i != j {
				trans[i].Connect(trans[j].LocalAddr(), trans[j])
			}
		}
	}
	for i := range n {
		cfg := raft.DefaultConfig()
		cfg.LocalID = config.Servers[i].ID
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 50*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond
		cfg.CommitTimeout = 5 * time.Millisecond
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Output: io.Discard})
		store := raft.NewInmemStore()
		r, err := raft.NewRaft(cfg, &raft.MockFSM{}, store, store, raft.NewInmemSnapshotStore(), trans[i])
		if err != nil {
			t.Fatal(err)
		}
		rafts[i] = r
		t.Cleanup(func() { r.Shutdown().Error() })
	}
	if err := rafts[0].BootstrapCluster(config).Error(); err != nil {
		t.Fatal(err)
	}
	leader := -1
	for deadline := time.Now().Add(10 * time.Second); leader < 0; {
		for i, r := range rafts {
			if r.State() == raft.Leader {
				leader = i
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
	lr := rafts[leader]
	if err := lr.Barrier(time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // every follower has the last entry
	// The first follower in the configuration dies.
	dead := (leader + 1) % n
	if leader == n-1 {
		dead = 0
	}
	trans[leader].Disconnect(trans[dead].LocalAddr())
	trans[dead].DisconnectAll()

	alive := func(id raft.ServerID) bool { return id != config.Servers[dead].ID }
	target, ok := handOverTarget(lr.GetConfiguration().Configuration().Servers, config.Servers[leader].ID, alive)
	if !ok {
		t.Fatal("no hand-over target")
	}
	var err error
	if target.ID == "" {
		err = lr.LeadershipTransfer().Error()
	} else {
		err = lr.LeadershipTransferToServer(target.ID, target.Address).Error()
	}
	if err != nil {
		t.Fatalf("handing the leadership over with %s dead: %v", config.Servers[dead].ID, err)
	}
}
