#!/bin/sh
# The images' entry point, run under tini. `serve` with PONDER_RAY_ADDRESS set first joins that Ray cluster as a node
# of this container's own, with no CPUs or GPUs: a Ray driver must run on a node of the cluster it joins, and zero
# resources keep engine actors and tasks off the gateway. An executable as the first argument runs as given, so the
# same image starts the Ray head and workers (`ray start ...`); anything else is a ponder subcommand.
set -eu

if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ] && command -v "$1" >/dev/null 2>&1; then
  exec "$@"
fi

if [ "${1:-}" = serve ] && [ -n "${PONDER_RAY_ADDRESS:-}" ]; then
  # Engine actors are named engine-<model>-<replica>-<generation> in the gateway's Ray namespace, so gateways that
  # share a cluster need namespaces of their own; the hostname is unique per container and per pod. Each gateway
  # owns (and on exit takes down) its own engine replicas.
  PONDER_RAY_NAMESPACE="${PONDER_RAY_NAMESPACE:-ponder-$(hostname)}"
  export PONDER_RAY_NAMESPACE
  # PONDER_RAY_NODE_ARGS: extra `ray start` flags for this node (object store size, ports), split on spaces.
  # shellcheck disable=SC2086
  ray start --address="$PONDER_RAY_ADDRESS" --num-cpus=0 --num-gpus=0 --disable-usage-stats ${PONDER_RAY_NODE_ARGS:-}
fi

exec ponder "$@"
