package placement

import (
	"fmt"
	"io"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// TestFSMUnderRaft runs the FSM as a real raft.FSM: three voters apply
// commands and agree; a fourth server added after a snapshot and log
// truncation is brought up to date through Restore.
func TestFSMUnderRaft(t *testing.T) {
	type server struct {
		id    raft.ServerID
		fsm   *FSM
		raft  *raft.Raft
		trans *raft.InmemTransport
	}
	conf := func(id raft.ServerID) *raft.Config {
		c := raft.DefaultConfig()
		c.LocalID = id
		c.HeartbeatTimeout = 50 * time.Millisecond
		c.ElectionTimeout = 50 * time.Millisecond
		c.LeaderLeaseTimeout = 50 * time.Millisecond
		c.CommitTimeout = 5 * time.Millisecond
		c.TrailingLogs = 1
		c.SnapshotThreshold = 1 << 30
		c.SnapshotInterval = time.Hour
		c.Logger = hclog.New(&hclog.LoggerOptions{Output: io.Discard})
		return c
	}
	newServer := func(i int) *server {
		id := raft.ServerID(fmt.Sprintf("s%d", i))
		_, tr := raft.NewInmemTransport(raft.ServerAddress(id))
		return &server{id: id, fsm: NewFSM(), trans: tr}
	}
	start := func(s *server) {
		r, err := raft.NewRaft(conf(s.id), s.fsm, raft.NewInmemStore(), raft.NewInmemStore(), raft.NewInmemSnapshotStore(), s.trans)
		if err != nil {
			t.Fatal(err)
		}
		s.raft = r
		t.Cleanup(func() { r.Shutdown().Error() })
	}
	var servers []*server
	for i := 0; i < 4; i++ {
		servers = append(servers, newServer(i))
	}
	for _, a := range servers {
		for _, b := range servers {
			if a != b {
				a.trans.Connect(b.trans.LocalAddr(), b.trans)
			}
		}
	}
	var voters []raft.Server
	for _, s := range servers[:3] {
		voters = append(voters, raft.Server{ID: s.id, Address: s.trans.LocalAddr()})
	}
	for _, s := range servers[:3] {
		start(s)
	}
	if err := servers[0].raft.BootstrapCluster(raft.Configuration{Servers: voters}).Error(); err != nil {
		t.Fatal(err)
	}
	leader := func() *raft.Raft {
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			for _, s := range servers {
				if s.raft != nil && s.raft.State() == raft.Leader {
					return s.raft
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatal("no leader")
		return nil
	}
	propose := func(c Command) (uint64, error) {
		b, err := EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		f := leader().Apply(b, 5*time.Second)
		if err := f.Error(); err != nil {
			t.Fatal(err)
		}
		return ApplyResponse(f.Response())
	}
	if v, err := propose(Command{Bootstrap: &BootstrapCmd{Map: InitialMap("c1", testNodes(3), 8, 3)}}); err != nil || v != 1 {
		t.Fatalf("bootstrap: %d %v", v, err)
	}
	if _, err := propose(Command{Bootstrap: &BootstrapCmd{Map: InitialMap("c2", testNodes(3), 8, 3)}}); err == nil {
		t.Fatal("second bootstrap accepted through raft")
	}
	if _, err := propose(Command{UpsertNode: &UpsertNodeCmd{Node: Node{ID: "n04", GRPCAddr: "h:4"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := propose(Command{SetShardReplicas: &SetShardReplicasCmd{Shard: 2, ExpectedVersion: 1, Replicas: ids("n01", "n02", "n04")}}); err != nil {
		t.Fatal(err)
	}
	// Garbage in the log is rejected identically everywhere.
	if f := leader().Apply([]byte("garbage"), time.Second); f.Error() != nil {
		t.Fatal(f.Error())
	} else if _, err := ApplyResponse(f.Response()); err == nil {
		t.Fatal("garbage applied")
	}
	if err := leader().Barrier(5 * time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	want := leader()
	var wantMap Map
	for _, s := range servers[:3] {
		if s.raft == want {
			wantMap = s.fsm.Map()
		}
	}
	converged := func(ss []*server) bool {
		for _, s := range ss {
			if !reflect.DeepEqual(s.fsm.Map(), wantMap) {
				return false
			}
		}
		return true
	}
	eventually(t, "followers to apply the same map", 5*time.Second, func() bool { return converged(servers[:3]) })

	// Snapshot and truncate, then add a fourth server: it can only catch
	// up by installing the snapshot (Restore).
	if err := want.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	start(servers[3])
	if err := want.AddVoter(servers[3].id, servers[3].trans.LocalAddr(), 0, 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new server to restore the map", 5*time.Second, func() bool { return converged(servers) })
	// raft records the installed snapshot in its stats after the FSM has
	// restored it: wait for that too (it stays "0" if the server caught up
	// from the log instead).
	eventually(t, "the new server to record the snapshot it installed", 5*time.Second, func() bool {
		idx := servers[3].raft.Stats()["last_snapshot_index"]
		return idx != "0" && idx != ""
	})
	if wantMap.Version != 3 || wantMap.ShardMap[2].Version != 2 {
		t.Fatalf("map after raft: %+v", wantMap)
	}
}
