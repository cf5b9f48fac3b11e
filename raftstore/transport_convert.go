package raftstore

import (
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/roostdb/roost/proto"
)

// Conversions between hashicorp/raft's RPC structs and the protobuf
// messages. Those from the wire validate what raft would otherwise trust:
// a header must be present and log types must be ones raft knows.

var errNoHeader = errors.New("missing RPC header")

func headerToProto(h raft.RPCHeader) *pb.RaftRPCHeader {
	return &pb.RaftRPCHeader{ProtocolVersion: int64(h.ProtocolVersion), Id: h.ID, Addr: h.Addr}
}

func headerFromProto(h *pb.RaftRPCHeader) raft.RPCHeader {
	if h == nil {
		return raft.RPCHeader{}
	}
	return raft.RPCHeader{ProtocolVersion: raft.ProtocolVersion(h.ProtocolVersion), ID: h.Id, Addr: h.Addr}
}

// requestHeader is headerFromProto for requests, where the header is
// required: raft identifies the sender by it.
func requestHeader(h *pb.RaftRPCHeader) (raft.RPCHeader, error) {
	if h == nil {
		return raft.RPCHeader{}, errNoHeader
	}
	if h.ProtocolVersion < int64(raft.ProtocolVersionMin) || h.ProtocolVersion > int64(raft.ProtocolVersionMax) {
		return raft.RPCHeader{}, fmt.Errorf("unsupported protocol version %d", h.ProtocolVersion)
	}
	return headerFromProto(h), nil
}

func appendEntriesRequestToProto(g GroupID, a *raft.AppendEntriesRequest) *pb.RaftAppendEntriesRequest {
	req := &pb.RaftAppendEntriesRequest{
		GroupId:           uint64(g),
		Header:            headerToProto(a.RPCHeader),
		Term:              a.Term,
		Leader:            a.Leader,
		PrevLogEntry:      a.PrevLogEntry,
		PrevLogTerm:       a.PrevLogTerm,
		LeaderCommitIndex: a.LeaderCommitIndex,
	}
	if n := len(a.Entries); n > 0 {
		// One allocation each for the entries and their timestamps.
		logs := make([]pb.RaftLog, n)
		var stamps []timestamppb.Timestamp
		req.Entries = make([]*pb.RaftLog, n)
		for i, l := range a.Entries {
			pl := &logs[i]
			pl.Index, pl.Term, pl.Type = l.Index, l.Term, pb.RaftLogType(l.Type)
			pl.Data, pl.Extensions = l.Data, l.Extensions
			if !l.AppendedAt.IsZero() {
				if stamps == nil {
					stamps = make([]timestamppb.Timestamp, n)
				}
				ts := &stamps[i]
				ts.Seconds, ts.Nanos = l.AppendedAt.Unix(), int32(l.AppendedAt.Nanosecond())
				pl.AppendedAt = ts
			}
			req.Entries[i] = pl
		}
	}
	return req
}

func appendEntriesRequestFromProto(req *pb.RaftAppendEntriesRequest) (*raft.AppendEntriesRequest, error) {
	h, err := requestHeader(req.Header)
	if err != nil {
		return nil, err
	}
	a := &raft.AppendEntriesRequest{
		RPCHeader:         h,
		Term:              req.Term,
		Leader:            req.Leader,
		PrevLogEntry:      req.PrevLogEntry,
		PrevLogTerm:       req.PrevLogTerm,
		LeaderCommitIndex: req.LeaderCommitIndex,
	}
	if n := len(req.Entries); n > 0 {
		logs := make([]raft.Log, n)
		a.Entries = make([]*raft.Log, n)
		for i, pl := range req.Entries {
			if pl == nil {
				return nil, fmt.Errorf("entry %d is missing", i)
			}
			if pl.Type < pb.RaftLogType_RAFT_LOG_TYPE_COMMAND || pl.Type > pb.RaftLogType_RAFT_LOG_TYPE_CONFIGURATION {
				return nil, fmt.Errorf("entry %d (index %d): unknown log type %d", i, pl.Index, pl.Type)
			}
			if pl.Type == pb.RaftLogType_RAFT_LOG_TYPE_CONFIGURATION {
				if err := checkConfiguration(pl.Data); err != nil {
					return nil, fmt.Errorf("entry %d (index %d): %w", i, pl.Index, err)
				}
			}
			l := &logs[i]
			l.Index, l.Term, l.Type = pl.Index, pl.Term, raft.LogType(pl.Type)
			l.Data, l.Extensions = pl.Data, pl.Extensions
			if ts := pl.AppendedAt; ts != nil {
				l.AppendedAt = time.Unix(ts.Seconds, int64(ts.Nanos))
			}
			a.Entries[i] = l
		}
	}
	return a, nil
}

func appendEntriesResponseToProto(r *raft.AppendEntriesResponse) *pb.RaftAppendEntriesResponse {
	return &pb.RaftAppendEntriesResponse{
		Header:         headerToProto(r.RPCHeader),
		Term:           r.Term,
		LastLog:        r.LastLog,
		Success:        r.Success,
		NoRetryBackoff: r.NoRetryBackoff,
	}
}

func appendEntriesResponseFromProto(out *pb.RaftAppendEntriesResponse, r *raft.AppendEntriesResponse) {
	*r = raft.AppendEntriesResponse{
		RPCHeader:      headerFromProto(out.Header),
		Term:           out.Term,
		LastLog:        out.LastLog,
		Success:        out.Success,
		NoRetryBackoff: out.NoRetryBackoff,
	}
}

func installSnapshotRequestFromProto(req *pb.RaftInstallSnapshotRequest) (*raft.InstallSnapshotRequest, error) {
	h, err := requestHeader(req.Header)
	if err != nil {
		return nil, err
	}
	if req.Size < 0 {
		return nil, fmt.Errorf("negative snapshot size %d", req.Size)
	}
	if req.SnapshotVersion > 0 {
		if err := checkConfiguration(req.Configuration); err != nil {
			return nil, err
		}
	}
	return &raft.InstallSnapshotRequest{
		RPCHeader:          h,
		SnapshotVersion:    raft.SnapshotVersion(req.SnapshotVersion),
		Term:               req.Term,
		Leader:             req.Leader,
		LastLogIndex:       req.LastLogIndex,
		LastLogTerm:        req.LastLogTerm,
		Peers:              req.Peers,
		Configuration:      req.Configuration,
		ConfigurationIndex: req.ConfigurationIndex,
		Size:               req.Size,
	}, nil
}

// checkConfiguration reports whether b is not an encoded raft.Configuration.
// raft decodes configuration entries and an InstallSnapshot's configuration
// with DecodeConfiguration, which panics on anything else: one malformed
// message would stop the node (a stored entry at every start, too).
func checkConfiguration(b []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed configuration: %v", r)
		}
	}()
	raft.DecodeConfiguration(b)
	return nil
}
