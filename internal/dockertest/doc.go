// Package dockertest holds the Docker end-to-end test: it builds the static
// roost binary and the container image (deploy/Dockerfile), starts the
// three-node cluster of docker-compose.yml as compose project "roosttest"
// (with testdata/compose.test.yml merged over it), checks that every node
// serves the counter, then runs one phase per fault under a counter load
// through every node not at fault: docker network disconnect and connect,
// docker kill and start of the node leading the most shards, docker pause
// and unpause, a one-way partition of the node leading the most shards
// (an iptables rule in its network namespace, through nsenter, that drops
// the connections others open to it and none it opens; skipped, saying
// so, where nsenter or iptables cannot be used), a fourth node (profile
// "scale") with roost rebalance, and roost drain and remove of it. Every call of a phase's load is recorded;
// each phase's history must be linearizable (porcupine, internal/linearize)
// and lose no acknowledged increment, and each phase logs one line of
// figures: calls and their outcomes, the longest time without an
// acknowledged increment, and how long after the fault, and after its
// heal, every counter was incremented again and every node ready. Timings
// are reported, not asserted.
//
// It needs a Docker daemon and docker compose (v2) or docker-compose (v1);
// without a daemon it is skipped. `make docker-test` runs it alone, with -v;
// `make test` runs it with everything else (3 to 6 minutes on two cores).
// It publishes only on 127.0.0.1, at ports it picks free, so it does not
// clash with a developer's own compose project.
package dockertest
