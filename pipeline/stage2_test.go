package pipeline

import (
	"reflect"
	"strconv"
	"testing"
)

func TestStage2ScoreAndRerank(t *testing.T) {
	p := func(x float64) *float64 { return &x }
	props := []Proposition{{Question: "red?", Expected: true}, {Question: "a dog?", Expected: false}}
	cands := []string{"a", "b", "c"}
	tests := []struct {
		name      string
		ver       []Verification // 2 per candidate, in candidate order
		imgFailed []bool
		soft      bool
		scores    []CandidateScore
		ranking   []string
		softRank  []string
		fallbacks []string
	}{
		{
			name: "agreement counts re-rank, ties keep the stage-1 order",
			ver: []Verification{
				{Agrees: false}, {Agrees: true},
				{Agrees: true}, {Agrees: true},
				{Agrees: false}, {Agrees: true},
			},
			imgFailed: make([]bool, 3),
			scores:    []CandidateScore{{Name: "a", Agreement: 1}, {Name: "b", Agreement: 2}, {Name: "c", Agreement: 1}},
			ranking:   []string{"b", "a", "c", "d"},
		},
		{
			name: "a failed verification or a missing image scores 0",
			ver: []Verification{
				{Agrees: true}, {Error: "timeout"},
				{Error: "load image: gone"}, {Error: "load image: gone"},
				{Agrees: true}, {Agrees: false},
			},
			imgFailed: []bool{false, true, false},
			scores:    []CandidateScore{{Name: "a", Failed: true}, {Name: "b", Failed: true}, {Name: "c", Agreement: 1}},
			ranking:   []string{"c", "a", "b", "d"},
			fallbacks: []string{FallbackVerifierFailed + ":a", FallbackImageMissing + ":b"},
		},
		{
			name: "soft scores sum the expected answer's probability",
			ver: []Verification{
				{Agrees: true, PYes: p(0.9)}, {Agrees: true, PYes: p(0.2)},
				{Agrees: true, PYes: p(0.6)}, {Agrees: true, PYes: p(0.1)},
				{Agrees: false, PYes: p(0.3)}, {Agrees: true, PYes: p(0.4)},
			},
			imgFailed: make([]bool, 3),
			soft:      true,
			scores: []CandidateScore{
				{Name: "a", Agreement: 2, Soft: p(1.7)}, {Name: "b", Agreement: 2, Soft: p(1.5)}, {Name: "c", Agreement: 1, Soft: p(0.9)},
			},
			ranking:  []string{"a", "b", "c", "d"},
			softRank: []string{"a", "b", "c", "d"},
		},
		{
			name: "no soft ranking when one answer lacks a probability",
			ver: []Verification{
				{Agrees: true, PYes: p(0.9)}, {Agrees: true, PYes: p(0.2)},
				{Agrees: true}, {Agrees: true, PYes: p(0.1)},
				{Agrees: true, PYes: p(0.3)}, {Agrees: true, PYes: p(0.4)},
			},
			imgFailed: make([]bool, 3),
			soft:      true,
			scores: []CandidateScore{
				{Name: "a", Agreement: 2, Soft: p(1.7)}, {Name: "b", Agreement: 2}, {Name: "c", Agreement: 2, Soft: p(0.9)},
			},
			ranking: []string{"a", "b", "c", "d"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Stage2{Propositions: props, Verifications: tt.ver}
			s.score(cands, tt.imgFailed, tt.soft)
			if !reflect.DeepEqual(s.Scores, tt.scores) {
				t.Errorf("scores = %s, want %s", fmtScores(s.Scores), fmtScores(tt.scores))
			}
			if !reflect.DeepEqual(s.Fallbacks, tt.fallbacks) {
				t.Errorf("fallbacks = %q, want %q", s.Fallbacks, tt.fallbacks)
			}
			s.rerank([]string{"a", "b", "c", "d"}, 3, tt.soft)
			if !reflect.DeepEqual(s.Ranking, tt.ranking) || !reflect.DeepEqual(s.SoftRanking, tt.softRank) {
				t.Errorf("ranking = %q soft %q, want %q soft %q", s.Ranking, s.SoftRanking, tt.ranking, tt.softRank)
			}
		})
	}
}

func fmtScores(cs []CandidateScore) string {
	out := ""
	for _, c := range cs {
		soft := "-"
		if c.Soft != nil {
			soft = fmtFloat(*c.Soft)
		}
		out += c.Name + ":" + fmtFloat(float64(c.Agreement)) + "/" + soft + " "
	}
	return out
}

func fmtFloat(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }
