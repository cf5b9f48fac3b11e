package node

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the node's Prometheus series, on the node's own registry.
type metrics struct {
	registry          *prometheus.Registry
	requests          *prometheus.CounterVec
	activations       prometheus.Counter
	evictions         prometheus.Counter
	hibernations      prometheus.Counter
	resets            prometheus.Counter
	overloaded        prometheus.Counter
	entries           prometheus.Counter
	batchesPerEntry   prometheus.Histogram
	commitFailures    prometheus.Counter
	alarmsFired       prometheus.Counter
	alarmFailures     prometheus.Counter
	forwarded         *prometheus.CounterVec
	callsPerSend      prometheus.Histogram
	repliesPerSend    prometheus.Histogram
	websockets        prometheus.Gauge
	websocketMessages *prometheus.CounterVec
	// websocketAutoResponses counts the messages the runtime answered by
	// itself (State.SetWebSocketAutoResponse).
	websocketAutoResponses prometheus.Counter
	// connectionsRefused counts connections refused over a listener's
	// limit (connLimitListener), by listener.
	connectionsRefused *prometheus.CounterVec
}

// gauges are the node's figures read when /metrics is scraped.
type gauges struct {
	instances     func() float64 // object instances in memory
	shardsLed     func() float64 // shard groups this node leads
	shardReplicas func() float64 // shard groups with a replica here
	storeBytes    func() float64 // the store's files on disk
}

func newMetrics(g gauges) *metrics {
	r := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { r.MustRegister(c) }
	m := &metrics{
		registry: r,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roost_http_requests_total", Help: "Requests answered by the app listener, by status code class.",
		}, []string{"code"}),
		activations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roost_instance_activations_total", Help: "Object instances constructed.",
		}),
		hibernations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roost_instance_hibernations_total", Help: "Idle object instances with open WebSockets whose object left memory (the sockets stay open).",
		}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roost_instance_evictions_total", Help: "Idle object instances evicted from memory.",
		}),
		resets: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roost_instance_resets_total", Help: "Object instances discarded after an exception, a failed commit or lost leadership.",
		}),
		overloaded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roost_overloaded_total", Help: "Requests refused because an object's queue was full.",
		}),
		entries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roost_raft_entries_proposed_total", Help: "Raft entries proposed by shard proposers.",
		}),
		batchesPerEntry: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "roost_raft_batches_per_entry", Help: "Object batches (turns' writes) grouped into one Raft entry.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
		commitFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roost_commit_failures_total", Help: "Object batches whose commit failed or was rejected.",
		}),
		alarmsFired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roost_alarms_fired_total", Help: "Alarms delivered successfully.",
		}),
		alarmFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roost_alarm_failures_total", Help: "Alarm deliveries that failed and will be retried.",
		}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roost_forwarded_requests_total",
			Help: `Requests sent to the node that leads their shard, by how: "calls" (on the peer's shared Calls stream), "call" (a stream each, to a peer without Calls), "fetch" (streamed bodies), "tunnel" (WebSocket upgrades, whose stream carries the socket).`,
		}, []string{"via"}),
		callsPerSend: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "roost_forward_calls_per_send", Help: "Requests sent together in one message of a Calls stream.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 9),
		}),
	}
	m.repliesPerSend = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "roost_forward_replies_per_send", Help: "Replies sent together in one message of a Calls stream (the serving side).",
		Buckets: prometheus.ExponentialBuckets(1, 2, 9),
	})
	m.websockets = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "roost_websockets", Help: "WebSockets open on objects of this node.",
	})
	m.websocketMessages = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "roost_websocket_messages_total", Help: `WebSocket messages of objects of this node, by direction: "received" from clients, "sent" to them.`,
	}, []string{"direction"})
	m.websocketAutoResponses = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "roost_websocket_auto_responses_total", Help: "WebSocket messages answered by the runtime with the object's auto-response, without waking the object (also counted as received and sent).",
	})
	m.connectionsRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "roost_connections_refused_total", Help: `Connections closed (answered 503 first on "app" and "admin") because their listener ("app", "admin" or "grpc") held its most open connections, a share of the open-file limit.`,
	}, []string{"listener"})
	f(m.connectionsRefused)
	f(m.websockets)
	f(m.websocketMessages)
	f(m.websocketAutoResponses)
	f(m.forwarded)
	f(m.callsPerSend)
	f(m.repliesPerSend)
	f(m.alarmsFired)
	f(m.alarmFailures)
	f(m.requests)
	f(m.activations)
	f(m.evictions)
	f(m.hibernations)
	f(m.resets)
	f(m.overloaded)
	f(m.entries)
	f(m.batchesPerEntry)
	f(m.commitFailures)
	for _, gf := range []struct {
		name, help string
		value      func() float64
	}{
		{"roost_instances", "Object instances in memory.", g.instances},
		{"roost_shards_led", "Shards whose Raft group this node leads.", g.shardsLed},
		{"roost_shard_replicas", "Shards with a replica (a Raft group member) on this node.", g.shardReplicas},
		{"roost_store_disk_bytes", "Bytes the node's Pebble store takes on disk (tables, write-ahead log, manifests; snapshots not counted).", g.storeBytes},
	} {
		f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: gf.name, Help: gf.help}, gf.value))
	}
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
