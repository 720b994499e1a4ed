#!/usr/bin/env bash
# Weaviate benchmark: insert throughput and single-query latency (p50/p99)
# for N clustered D-dimensional images (image + caption vectors) on a single
# node and on a 3-node cluster with replication factor 3, next to the
# embedded exact path (vindex) on the same data, plus the candidate-set size
# vs overlap@K / latency trade-off. Starts and stops the servers itself
# through scripts/weaviate.sh (which builds weaviate-server once into
# $HOME/.cache/imagescope-ci, or uses $WEAVIATE_BIN).
#
# Environment: N (100000), DIM (768), QUERIES (200), CANDIDATES (32,64,128,256,512),
# CLUSTER_QUERIES (100), CLUSTER_CANDIDATES (128,256), BENCH_BIN (prebuilt
# bench binary; default: go build), SKIP_CLUSTER=1.
# Last line: weaviate n=... single_insert_obj_s=... single_p50_ms=... ... overlap100=...
set -euo pipefail
cd "$(dirname "$0")/../.."

N=${N:-100000}
DIM=${DIM:-768}
OUTDIR=${BENCH_OUT:-$(mktemp -d)}
BENCH=${BENCH_BIN:-}
if [[ -z "$BENCH" ]]; then
	BENCH="$OUTDIR/bench-weaviate"
	go build -o "$BENCH" ./bench/weaviate
fi
W=scripts/weaviate.sh
trap '$W stop >/dev/null 2>&1 || true' EXIT

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }

echo "== single node"
$W wipe
$W start single >/dev/null
"$BENCH" -mode single -urls "$($W urls single)" -n "$N" -dim "$DIM" -queries "${QUERIES:-200}" \
	-candidates "${CANDIDATES:-32,64,128,256,512}" | tee "$OUTDIR/single.txt"
$W wipe
single=$(tail -n 1 "$OUTDIR/single.txt")

cluster=""
if [[ "${SKIP_CLUSTER:-}" != 1 ]]; then
	echo "== 3-node cluster, replication factor 3"
	$W start cluster >/dev/null
	"$BENCH" -mode cluster -replicas 3 -urls "$($W urls cluster)" -grpc "$($W grpc cluster)" -n "$N" -dim "$DIM" \
		-queries "${CLUSTER_QUERIES:-100}" -candidates "${CLUSTER_CANDIDATES:-128,256}" | tee "$OUTDIR/cluster.txt"
	$W wipe
	cluster=$(tail -n 1 "$OUTDIR/cluster.txt")
fi

echo "weaviate n=$N dim=$DIM candidates=$(field candidates "$single") exact_p50_ms=$(field exact_p50_ms "$single") exact_p99_ms=$(field exact_p99_ms "$single")" \
	"single_insert_obj_s=$(field insert_obj_s "$single") single_p50_ms=$(field p50_ms "$single") single_p99_ms=$(field p99_ms "$single")" \
	"cluster_insert_obj_s=$(field insert_obj_s "$cluster") cluster_p50_ms=$(field p50_ms "$cluster") cluster_p99_ms=$(field p99_ms "$cluster")" \
	"overlap20=$(field overlap20 "$single") overlap100=$(field overlap100 "$single")"
