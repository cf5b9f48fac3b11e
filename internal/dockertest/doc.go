// Package dockertest holds the Docker end-to-end test: it builds the static
// roost binary and the container image (deploy/Dockerfile), starts the
// three-node cluster of docker-compose.yml as compose project "roosttest"
// (with testdata/compose.test.yml merged over it), and checks that every
// node serves the counter, that SIGKILLing a node and starting it again
// loses no acknowledged increment, and that a fourth node (profile "scale")
// joins and serves.
//
// It needs a Docker daemon and docker compose (v2) or docker-compose (v1);
// without a daemon it is skipped. `make docker-test` runs it alone, with -v;
// `make test` runs it with everything else. It publishes only on 127.0.0.1,
// at ports it picks free, so it does not clash with a developer's own
// compose project.
package dockertest
