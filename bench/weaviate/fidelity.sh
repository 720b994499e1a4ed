#!/usr/bin/env bash
# Weaviate fidelity: overlap@20 and @100 between search through Weaviate
# (candidate set from HNSW, then the exact fused re-score) and exact search,
# at several candidate-set sizes, on hard and on real-model data:
#   - uniform: N independent uniformly random 768-d unit vectors (images,
#     captions and query descriptions): the worst case for HNSW;
#   - clustered: the synthetic clustered gallery of run.sh;
#   - the fixture benchmark galleries embedded with the test CLIP
#     (tiny-clip-quickgelu beside the repository), each image's own vector
#     as a query (3 to 10 images each: candidates cover them whole);
#   - GENERATED generated pictures (bench/serve's 48x36 coloured shapes)
#     embedded with the same CLIP, each image's own vector as a query.
# Starts one Weaviate node through scripts/weaviate.sh and stops it on exit.
#
# Environment: N (20000), GENERATED (5000), QUERIES (200), CANDIDATES (64,128,256,512),
# DEFAULT (256), CLIP (fixture model folder), DATA (fixture data root).
# Last line: weaviate_fidelity default=256 min_overlap20=... min_overlap100=... sets=...
set -euo pipefail
cd "$(dirname "$0")/../.."

N=${N:-20000}
CANDIDATES=${CANDIDATES:-64,128,256,512}
DEFAULT=${DEFAULT:-256}
CLIP=${CLIP:-$(cd .. && pwd)/shared/fixtures/clip/tiny-clip-quickgelu}
DATA=${DATA:-$(cd .. && pwd)/shared/fixtures/datasets}
work=$(mktemp -d)
W=scripts/weaviate.sh
trap '$W stop >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

go build -o "$work/bench" ./bench/weaviate
go build -o "$work/imagescope" ./cmd/imagescope
go build -o "$work/serveload" ./bench/cmd/serveload

# The fixture galleries, embedded with the test CLIP (no captions).
sets=(uniform clustered)
for ds in CIRR:val CIRCO:val FashionIQ-dress:val Flickr30K:test MSCOCO:test VisDial:val; do
	name=${ds%%:*} split=${ds##*:}
	IMAGESCOPE_HOME="$work/home" IMAGESCOPE_CONFIG= "$work/imagescope" index --dataset "$name" --data "$DATA" --split "$split" \
		--clip "$CLIP" --db "$work/$name.db" >/dev/null 2>&1
	sets+=("db:$work/$name.db")
done
"$work/serveload" mkdb --out "$work/synthetic.db" --images "$work/generated" --clip "$CLIP" --n "${GENERATED:-5000}" >/dev/null 2>&1
IMAGESCOPE_HOME="$work/home" IMAGESCOPE_CONFIG= "$work/imagescope" index --gallery "$work/generated" --clip "$CLIP" --db "$work/generated.db" >/dev/null 2>&1
sets+=("db:$work/generated.db")

$W wipe
$W start single >/dev/null
url=$($W urls single)
printf '%-28s %-6s %-10s %-10s %-11s\n' set images candidates overlap@20 overlap@100 | tee "$work/table.txt"
min20=1 min100=1
for set in "${sets[@]}"; do
	label=$set
	[[ $set == db:* ]] && label=$(basename "${set#db:}" .db)
	"$work/bench" -urls "$url" -data "$set" -n "$N" -queries "${QUERIES:-200}" -candidates "$CANDIDATES" -default "$DEFAULT" >"$work/out.txt"
	n=$(sed -n 's/.* n=\([0-9]*\) .*/\1/p' "$work/out.txt" | tail -n 1)
	awk -v set="$label" -v n="$n" '$1 ~ /^[0-9]+$/ && NF == 6 { printf "%-28s %-6s %-10s %-10s %-11s\n", set, n, $1, $2, $3 }' "$work/out.txt" | tee -a "$work/table.txt"
	o20=$(sed -n 's/.* overlap20=\([0-9.]*\).*/\1/p' "$work/out.txt")
	o100=$(sed -n 's/.* overlap100=\([0-9.]*\).*/\1/p' "$work/out.txt")
	min20=$(awk -v a="$min20" -v b="$o20" 'BEGIN { print (b < a) ? b : a }')
	min100=$(awk -v a="$min100" -v b="$o100" 'BEGIN { print (b < a) ? b : a }')
done
echo "weaviate_fidelity default=$DEFAULT min_overlap20=$min20 min_overlap100=$min100 sets=${#sets[@]} uniform_n=$N"
