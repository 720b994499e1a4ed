package run

import (
	"encoding/json"
	"fmt"
	"html"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

var recallKey = regexp.MustCompile(`^(?i)(recall|r)@(\d+)$`)

// plotSVG draws Recall@K by stage (x: K on a log scale; one line per
// stage). For chat datasets, whose reports carry per-round hits lists, it
// draws Hits@10 by round instead.
func plotSVG(title string, series map[string]map[string]json.RawMessage) string {
	stages := make([]string, 0, len(series))
	for s := range series {
		stages = append(stages, s)
	}
	sort.Strings(stages)
	type pt struct{ x, y float64 }
	lines := map[string][]pt{}
	xlabel, ylabel := "K", "Recall@K (%)"
	var xticks []float64
	logX := true
	for _, st := range stages {
		var pts []pt
		for k, raw := range series[st] {
			m := recallKey.FindStringSubmatch(k)
			if m == nil {
				continue
			}
			var v float64
			if json.Unmarshal(raw, &v) != nil {
				continue
			}
			kk, _ := strconv.Atoi(m[2])
			pts = append(pts, pt{float64(kk), v})
		}
		if len(pts) == 0 {
			// Chat: hits@10 as a list over rounds.
			for _, key := range []string{"hits@10", "Hits@10"} {
				var vs []float64
				if raw, ok := series[st][key]; ok && json.Unmarshal(raw, &vs) == nil {
					for i, v := range vs {
						pts = append(pts, pt{float64(i), v})
					}
					xlabel, ylabel, logX = "round", "Hits@10 (%, cumulative)", false
					break
				}
			}
		}
		sort.Slice(pts, func(a, b int) bool { return pts[a].x < pts[b].x })
		lines[st] = pts
		for _, p := range pts {
			xticks = append(xticks, p.x)
		}
	}
	sort.Float64s(xticks)
	xticks = uniq(xticks)
	// Reports may hold fractions or percentages; plot percentages.
	maxY := 0.0
	for _, pts := range lines {
		for _, p := range pts {
			maxY = max(maxY, p.y)
		}
	}
	if maxY <= 1 {
		for st, pts := range lines {
			for i := range pts {
				pts[i].y *= 100
			}
			lines[st] = pts
		}
	}
	const W, H, L, R, T, B = 640.0, 400.0, 60.0, 130.0, 40.0, 50.0
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", int(W), int(H), int(W), int(H))
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%g" y="22" font-size="15">%s</text>`+"\n", L, html.EscapeString(title+": "+ylabel+" by stage"))
	if len(xticks) == 0 {
		b.WriteString(`<text x="60" y="200">no metrics (unlabelled split)</text>` + "\n</svg>\n")
		return b.String()
	}
	xmin, xmax := xticks[0], xticks[len(xticks)-1]
	fx := func(x float64) float64 {
		if xmax == xmin {
			return L + (W-L-R)/2
		}
		if logX && xmin > 0 {
			return L + (W-L-R)*(log(x)-log(xmin))/(log(xmax)-log(xmin))
		}
		return L + (W-L-R)*(x-xmin)/(xmax-xmin)
	}
	fy := func(y float64) float64 { return T + (H-T-B)*(1-y/100) }
	// Axes and grid.
	for y := 0.0; y <= 100; y += 20 {
		fmt.Fprintf(&b, `<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke="#ddd"/>`+"\n", L, fy(y), W-R, fy(y))
		fmt.Fprintf(&b, `<text x="%g" y="%.1f" text-anchor="end">%g</text>`+"\n", L-6, fy(y)+4, y)
	}
	for _, x := range xticks {
		fmt.Fprintf(&b, `<text x="%.1f" y="%g" text-anchor="middle">%g</text>`+"\n", fx(x), H-B+16, x)
	}
	fmt.Fprintf(&b, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="black"/>`+"\n", L, H-B, W-R, H-B)
	fmt.Fprintf(&b, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="black"/>`+"\n", L, T, L, H-B)
	fmt.Fprintf(&b, `<text x="%g" y="%g" text-anchor="middle">%s</text>`+"\n", L+(W-L-R)/2, H-10, html.EscapeString(xlabel))
	colors := []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"}
	for i, st := range stages {
		pts := lines[st]
		if len(pts) == 0 {
			continue
		}
		c := colors[i%len(colors)]
		var path strings.Builder
		for j, p := range pts {
			if j > 0 {
				path.WriteByte(' ')
			}
			fmt.Fprintf(&path, "%.1f,%.1f", fx(p.x), fy(p.y))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", c, path.String())
		for _, p := range pts {
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>%s %s=%g: %.2f</title></circle>`+"\n", fx(p.x), fy(p.y), c, st, xlabel, p.x, p.y)
		}
		ly := T + 20*float64(i)
		fmt.Fprintf(&b, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="%s" stroke-width="2"/>`+"\n", W-R+12, ly, W-R+32, ly, c)
		fmt.Fprintf(&b, `<text x="%g" y="%g">%s</text>`+"\n", W-R+38, ly+4, st)
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func uniq(xs []float64) []float64 {
	var out []float64
	for i, x := range xs {
		if i == 0 || x != xs[i-1] {
			out = append(out, x)
		}
	}
	return out
}
