package raftstore

import (
	"fmt"
	"io"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func BenchmarkNetApply3Tmp(b *testing.B) {
	stores := []*Store{openTest(b), openTest(b), openTest(b)}
	var trs []*raft.NetworkTransport
	var srv []raft.Server
	for i := range stores {
		tr, err := raft.NewTCPTransport("127.0.0.1:0", nil, 3, 5*time.Second, io.Discard)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { tr.Close() })
		trs = append(trs, tr)
		srv = append(srv, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(fmt.Sprint("n", i)), Address: tr.LocalAddr()})
	}
	var groups []*Group
	for i, s := range stores {
		g, err := s.StartGroup(GroupConfig{ID: 1, LocalID: srv[i].ID, Transport: trs[i], Bootstrap: srv})
		if err != nil {
			b.Fatal(err)
		}
		groups = append(groups, g)
	}
	r := groups[leaderIndex(b, groups, -1, 10*time.Second)].Raft()
	var next atomic.Int64
	procs := runtime.GOMAXPROCS(0)
	b.SetParallelism((64 + procs - 1) / procs)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		obj := oid(int(next.Add(1)))
		for v := uint64(1); pb.Next(); v++ {
			e := Entry{Batches: []ObjectBatch{batch(obj, v, put("counter", fmt.Sprint(v)))}}
			data, _ := e.AppendBinary(nil)
			if err := r.Apply(data, 10*time.Second).Error(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "applies/s")
}
