package node

import (
	"net/url"
	"testing"

	gproto "google.golang.org/protobuf/proto"

	"github.com/roostdb/roost/durable"
	"github.com/roostdb/roost/proto"
)

// FuzzForwardHead feeds arbitrary bytes to what a node does with the head
// of a forwarded request before anything runs: decode the message (a Fetch
// frame or a batch of a Calls stream), check the class, ID and hop count,
// parse the URL. None of it may panic, and only a genuine ID of a
// registered class may pass.
func FuzzForwardHead(f *testing.F) {
	key := durable.DeriveNamespaceKey("Counter", "")
	id := durable.IDFromName(key, "A").Bytes()
	good, _ := gproto.Marshal(&proto.ForwardFrame{Frame: &proto.ForwardFrame_Head{Head: &proto.ForwardHead{
		Class: "Counter", ObjectId: id[:], Method: []byte("GET"), Url: []byte("/increment?name=A"), Hops: 1}}})
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x03, 0x0a, 0x01, 0x43})
	batch, _ := gproto.Marshal(&proto.ForwardCallBatch{Calls: []*proto.ForwardTaggedCall{{Tag: 1, Call: &proto.ForwardCall{
		Head: &proto.ForwardHead{Class: "Counter", ObjectId: id[:], Method: []byte("GET"), Url: []byte("/increment?name=A")}}}}, Cancelled: []uint64{3}})
	f.Add(batch)
	m := &manager{keys: map[string]*durable.IDKeyring{"Counter": durable.NewIDKeyring(key)}}
	f.Fuzz(func(t *testing.T, b []byte) {
		// The same bytes as a Fetch frame and as a batch of a Calls stream.
		var heads []*proto.ForwardHead
		var fr proto.ForwardFrame
		if gproto.Unmarshal(b, &fr) == nil && fr.GetHead() != nil {
			heads = append(heads, fr.GetHead())
		}
		var cb proto.ForwardCallBatch
		if gproto.Unmarshal(b, &cb) == nil {
			for _, c := range cb.Calls {
				if h := c.GetCall().GetHead(); h != nil {
					heads = append(heads, h)
				}
			}
		}
		for _, head := range heads {
			class, got, err := m.checkForwarded(head)
			if err != nil {
				continue
			}
			if class != "Counter" || len(head.ObjectId) != 32 || [32]byte(head.ObjectId) != got.Bytes() {
				t.Fatalf("accepted head %+v as %s %s", head, class, got)
			}
			if _, perr := durable.ParseID(key, got.String()); perr != nil {
				t.Fatalf("accepted an ID of another namespace: %v", perr)
			}
			url.ParseRequestURI(string(head.Url))
		}
	})
}
