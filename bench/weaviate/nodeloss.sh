#!/usr/bin/env bash
# Node loss under load: 'imagescope serve --weaviate' over a 3-node Weaviate
# cluster (replication factor 3, consistency QUORUM) answers CLIENTS
# concurrent searches for DURATION while the node it talks to first is
# killed (SIGKILL) at KILL_AT and restarted at RESTART_AT. Reports failed
# searches and p50/p99 latency before, during and after the outage.
#
# The gallery is the synthetic image DB of bench/serve (generated images,
# clustered image embeddings, template captions embedded with the test
# CLIP's text tower), copied into the cluster. serve runs stage 1 only
# (no model roles): CLIP text embedding, Weaviate candidates, exact re-rank.
#
# Env: CLIENTS (20), DURATION (60s), KILL_AT (20s), RESTART_AT (35s),
#      IMAGES (10000), CLIP (the tiny-clip-quickgelu fixture beside the repository).
# Last line: serve_nodeloss clients=... failed=... before_p50_ms=... before_p99_ms=... during_... after_...
set -euo pipefail
cd "$(dirname "$0")/../.."

CLIENTS=${CLIENTS:-20}
DURATION=${DURATION:-60s}
KILL_AT=${KILL_AT:-20s}
RESTART_AT=${RESTART_AT:-35s}
IMAGES=${IMAGES:-10000}
CLIP=${CLIP:-$(cd .. && pwd)/shared/fixtures/clip/tiny-clip-quickgelu}
W="$PWD/scripts/weaviate.sh"
work=$(mktemp -d)
server_pid=""
cleanup() {
	if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
		kill "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
	fi
	"$W" stop >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/imagescope" ./cmd/imagescope
go build -o "$work/serveload" ./bench/cmd/serveload
echo "building a synthetic ${IMAGES}-image DB" >&2
"$work/serveload" mkdb --out "$work/gallery.db" --images "$work/images" --clip "$CLIP" --n "$IMAGES" >&2

"$W" wipe
"$W" start cluster >/dev/null
urls=$("$W" urls cluster)
grpcs=$("$W" grpc cluster)
"$work/serveload" towv --db "$work/gallery.db" --urls "$urls" --grpc "$grpcs" --collection NodeLoss --replicas 3 >&2

cat >"$work/config.yaml" <<YAML
clip:
  model: $CLIP
weaviate:
  url: $urls
  grpc: $grpcs
  consistency_level: QUORUM
YAML
port=$((20000 + RANDOM % 20000))
IMAGESCOPE_HOME="$work/home" IMAGESCOPE_LOG_LEVEL=warn \
	"$work/imagescope" serve --config "$work/config.yaml" --weaviate NodeLoss --addr "127.0.0.1:$port" \
	--max-stage 1 --max-searches "$(nproc)" 2>"$work/serve.log" &
server_pid=$!
for _ in $(seq 1 600); do
	if curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then break; fi
	if ! kill -0 "$server_pid" 2>/dev/null; then cat "$work/serve.log" >&2; echo "server exited" >&2; exit 1; fi
	sleep 0.1
done
echo "serve --weaviate up on 127.0.0.1:$port; $CLIENTS clients for $DURATION, node cluster0 killed at $KILL_AT, restarted at $RESTART_AT" >&2
"$work/serveload" load --url "http://127.0.0.1:$port" --clients "$CLIENTS" --duration "$DURATION" --baseline 2s --pid "$server_pid" \
	--kill-cmd "$W kill-node 0" --kill-at "$KILL_AT" --restart-cmd "$W start cluster" --restart-at "$RESTART_AT"
