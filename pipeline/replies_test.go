package pipeline

import (
	"reflect"
	"testing"
)

// The reply corpus: replies in the styles instruction-tuned models write,
// one category per group, with the reading each must get. "ref" notes what
// the reference flow (first ```json block else the shortest {...} match,
// then json_repair) makes of the same reply; every reading here is at
// least as good.

const (
	instr = "make it red"
	refc  = "a blue car"
)

func TestParseReasoningCorpus(t *testing.T) {
	a := func(pairs ...string) []Atomic {
		out := []Atomic{}
		for i := 0; i < len(pairs); i += 2 {
			out = append(out, Atomic{Type: pairs[i], Content: pairs[i+1]})
		}
		return out
	}
	tests := []struct {
		category, ref string
		reply         string
		atomic        []Atomic
		desc          []string
		fallback      string
	}{
		{"well formed", "same",
			"Reasoning...\n```json\n{\"step1\": [[\"Modification\", \"blue becomes red\"]], \"step2\": [\"A red car.\", \"A red car on a road.\"]}\n```",
			a("Modification", "blue becomes red"), []string{"A red car.", "A red car on a road."}, ""},
		{"trailing commas, single quotes", "same",
			"{'step1': [['Addition', 'a dog'],], 'step2': ['the dog's car',],}",
			a("Addition", "a dog"), []string{"the dog's car"}, ""},
		{"# comments", "json_repair drops the comments",
			"```json\n{\n  # atomic instructions\n  \"step1\": [[\"Modification\", \"blue becomes red\"]], # one change\n  \"step2\": [\"A red car.\"] # the target\n}\n```",
			a("Modification", "blue becomes red"), []string{"A red car."}, ""},
		{"unquoted keys", "json_repair quotes them",
			"```json\n{step1: [[\"Removal\", \"the hat\"]], step2: [\"A man without a hat.\"]}\n```",
			a("Removal", "the hat"), []string{"A man without a hat."}, ""},
		{"cut right after the opening brace", "no match: the method's fallback",
			"Let me think. The request asks for a red car.\n```json\n{",
			a("Modification", instr), []string{refc}, FallbackUnparseable},
		{"cut right after the opening brace, no fence", "no match: the method's fallback",
			"Here is the answer: {",
			a("Modification", instr), []string{refc}, FallbackUnparseable},
		{"cut inside step2", "json_repair closes the strings and lists",
			"```json\n{\"step1\": [[\"Addition\", \"a hat\"]], \"step2\": [\"A hat.\", \"A red ha",
			a("Addition", "a hat"), []string{"A hat.", "A red ha"}, ""},
		{"number as atomic content", "the f-string renders 3",
			`{"step1": [["Modification", 3], ["Addition", 2.5]], "step2": ["Three dogs."]}`,
			a("Modification", "3", "Addition", "2.5"), []string{"Three dogs."}, ""},
		{"two JSON blocks", "the first block: no step1/step2, so the caption fallback",
			"The output format is:\n```json\n{\"format\": \"step1 then step2\"}\n```\nMy answer:\n```json\n{\"step1\": [[\"Addition\", \"a dog\"]], \"step2\": [\"A dog.\"]}\n```",
			a("Addition", "a dog"), []string{"A dog."}, ""},
		{"nested braces without a fence", "the shortest match cuts at the first }",
			`Result: {"step1": [{"type": "Addition", "content": "a dog"}], "step2": ["A dog on grass."]}`,
			a("Addition", "a dog"), []string{"A dog on grass."}, ""},
		{"step1 items as objects", "dropped: not 2-element lists",
			"```json\n{\"step1\": [{\"type\": \"Removal\", \"content\": \"the fence\"}, {\"Type\": \"retention\", \"Content\": \"the field\"}], \"step2\": [\"A field.\"]}\n```",
			a("Removal", "the fence", "Retention", "the field"), []string{"A field."}, ""},
		{"step1 items as type-keyed objects", "dropped",
			"```json\n{\"step1\": [{\"Addition\": \"a dog\"}, {\"Removal\": \"the cat\"}], \"step2\": [\"A dog.\"]}\n```",
			a("Addition", "a dog", "Removal", "the cat"), []string{"A dog."}, ""},
		{"3-element lists", "dropped",
			"```json\n{\"step1\": [[1, \"Addition\", \"a dog\"], [\"Modification\", \"colour\", \"blue to red\"]], \"step2\": [\"A red car and a dog.\"]}\n```",
			a("Addition", "a dog", "Modification", "colour: blue to red"), []string{"A red car and a dog."}, ""},
		{"known types in other cases and forms", "kept as written",
			"```json\n{\"step1\": [[\"addition\", \"a dog\"], [\"REMOVAL\", \"the cat\"], [\"Modify\", \"blue to red\"], [\"Keep\", \"the road\"], [\"compare\", \"bigger\"]], \"step2\": [\"x\"]}\n```",
			a("Addition", "a dog", "Removal", "the cat", "Modification", "blue to red", "Retention", "the road", "Comparison", "bigger"), []string{"x"}, ""},
		{"type strings", "dropped",
			"```json\n{\"step1\": [\"Addition: a dog\", \"(2) Removal: the cat\"], \"step2\": [\"A dog.\"]}\n```",
			a("Addition", "a dog", "Removal", "the cat"), []string{"A dog."}, ""},
		{"unknown type kept", "same",
			"```json\n{\"step1\": [[\"Style\", \"watercolour\"], [\"Addition\", \"\"]], \"step2\": [\"A painting.\"]}\n```",
			a("Style", "watercolour"), []string{"A painting."}, ""},
		{"wrapped under an outer key", "no step2 at the top: the caption fallback",
			"```json\n{\"answer\": {\"step1\": [[\"Addition\", \"a dog\"]], \"step2\": [\"A dog.\"]}}\n```",
			a("Addition", "a dog"), []string{"A dog."}, ""},
		{"step2 wrapped under a key", "not a list of strings",
			"```json\n{\"step1\": {\"atomic_instructions\": [[\"Addition\", \"a dog\"]]}, \"step2\": {\"descriptions\": [\"A dog.\", \"A brown dog.\"]}}\n```",
			a("Addition", "a dog"), []string{"A dog.", "A brown dog."}, ""},
		{"step2 as objects", "not strings",
			"```json\n{\"step1\": [], \"step2\": [{\"level\": 1, \"description\": \"A dog.\"}, {\"level\": 2, \"description\": \"A brown dog.\"}]}\n```",
			[]Atomic{}, []string{"A dog.", "A brown dog."}, ""},
		{"// comments", "not read by json_repair 0.29.6",
			"```json\n{\n  // instructions\n  \"step1\": [[\"Addition\", \"a dog\"]],\n  \"step2\": [\"A dog.\"] // one\n}\n```",
			a("Addition", "a dog"), []string{"A dog."}, ""},
		{"unescaped quotes inside a description", "json_repair keeps them in the string",
			"```json\n{\"step1\": [[\"Addition\", \"a sign saying \"STOP\"\"]], \"step2\": [\"A red \"STOP\" sign.\"]}\n```",
			a("Addition", `a sign saying "STOP"`), []string{`A red "STOP" sign.`}, ""},
		{"step2 missing", "same",
			"```json\n{\"step1\": [[\"Addition\", \"a dog\"]]}\n```",
			a("Addition", "a dog"), []string{refc}, FallbackNoDescriptions},
		{"no JSON", "same",
			"I cannot help with that.",
			a("Modification", instr), []string{refc}, FallbackUnparseable},
	}
	for _, tc := range tests {
		t.Run(tc.category, func(t *testing.T) {
			at, desc, fb := ParseReasoning(tc.reply, instr, refc)
			if !reflect.DeepEqual(at, tc.atomic) || !reflect.DeepEqual(desc, tc.desc) || fb != tc.fallback {
				t.Errorf("reading:\n atomic %#v\n desc %q\n fallback %q\nwant:\n atomic %#v\n desc %q\n fallback %q",
					at, desc, fb, tc.atomic, tc.desc, tc.fallback)
			}
		})
	}
}

func TestParsePropositionsCorpus(t *testing.T) {
	p := func(pairs ...any) []Proposition {
		var out []Proposition
		for i := 0; i < len(pairs); i += 2 {
			out = append(out, Proposition{Question: pairs[i].(string), Expected: pairs[i+1].(bool)})
		}
		return out
	}
	tests := []struct {
		category, ref string
		reply         string
		statements    []string
		props         []Proposition
		ok            bool
	}{
		{"well formed", "same",
			"```json\n{\"step1\": [\"The car is red.\"], \"step2\": [[\"Is the car red?\", \"True\"], [\"Is there a fence?\", \"False\"]]}\n```",
			[]string{"The car is red."}, p("Is the car red?", true, "Is there a fence?", false), true},
		{"# comments", "json_repair drops them",
			"```json\n{\n  \"step1\": [\"The car is red.\"], # facts\n  \"step2\": [[\"Is the car red?\", \"True\"]] # questions\n}\n```",
			[]string{"The car is red."}, p("Is the car red?", true), true},
		{"unquoted keys", "json_repair quotes them",
			"```json\n{step1: [\"A dog.\"], step2: [[\"Is there a dog?\", \"True\"]]}\n```",
			[]string{"A dog."}, p("Is there a dog?", true), true},
		{"null expected answer", "never equal to True/False: the question never counts",
			"```json\n{\"step1\": [], \"step2\": [[\"Is there a dog?\", null], [\"Is it red?\", \"True\"], [\"Is it big?\", None]]}\n```",
			nil, p("Is it red?", true), true},
		{"answers Yes./No./1/0", "never equal to True/False",
			"```json\n{\"step2\": [[\"Is there a dog?\", \"Yes.\"], [\"Is there a cat?\", \"No.\"], [\"Is it red?\", 1], [\"Is it small?\", 0], [\"Is it wet?\", true], [\"Is it new?\", \"no\"]]}\n```",
			nil, p("Is there a dog?", true, "Is there a cat?", false, "Is it red?", true, "Is it small?", false, "Is it wet?", true, "Is it new?", false), true},
		{"unreadable answer dropped", "never counts",
			"```json\n{\"step2\": [[\"Is there a dog?\", \"maybe\"], [\"Is it red?\", \"False\"]]}\n```",
			nil, p("Is it red?", false), true},
		{"two JSON blocks", "the first block has no step2: nothing verified",
			"Template:\n```json\n{\"note\": \"fill in\"}\n```\nAnswer:\n```json\n{\"step1\": [\"A dog.\"], \"step2\": [[\"Is there a dog?\", \"True\"]]}\n```",
			[]string{"A dog."}, p("Is there a dog?", true), true},
		{"propositions as objects", "dropped: not lists",
			"```json\n{\"step2\": [{\"question\": \"Is there a dog?\", \"answer\": \"True\"}, {\"Question\": \"Is it night?\", \"Expected\": false}]}\n```",
			nil, p("Is there a dog?", true, "Is it night?", false), true},
		{"3-element lists", "dropped",
			"```json\n{\"step2\": [[\"The car is red.\", \"Is the car red?\", \"True\"], [\"Is there a fence?\", \"False\", \"the fence was removed\"]]}\n```",
			nil, p("Is the car red?", true, "Is there a fence?", false), true},
		{"propositions wrapped under an outer key", "no step2 at the top",
			"```json\n{\"propositions\": {\"step1\": [\"A dog.\"], \"step2\": [[\"Is there a dog?\", \"True\"]]}}\n```",
			[]string{"A dog."}, p("Is there a dog?", true), true},
		{"step2 wrapped under a key", "not a list",
			"```json\n{\"step1\": [\"A dog.\"], \"step2\": {\"questions\": [[\"Is there a dog?\", \"True\"]]}}\n```",
			[]string{"A dog."}, p("Is there a dog?", true), true},
		{"step2 as a question -> answer object", "not a list",
			"```json\n{\"step2\": {\"Is there a dog?\": \"True\", \"Is it raining?\": \"False\"}}\n```",
			nil, p("Is there a dog?", true, "Is it raining?", false), true},
		{"// comments", "not read by json_repair 0.29.6",
			"```json\n{\n  // questions\n  \"step2\": [[\"Is there a dog?\", \"True\"]]\n}\n```",
			nil, p("Is there a dog?", true), true},
		{"no fence", "the reference reads stage 2 from a ```json block only",
			`Here you go: {"step1": ["A dog."], "step2": [["Is there a dog?", "True"]]}`,
			[]string{"A dog."}, p("Is there a dog?", true), true},
		{"cut right after the opening brace", "nothing",
			"```json\n{",
			nil, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.category, func(t *testing.T) {
			st, props, ok := ParsePropositions(tc.reply)
			if !reflect.DeepEqual(st, tc.statements) || !reflect.DeepEqual(props, tc.props) || ok != tc.ok {
				t.Errorf("reading:\n statements %q\n props %+v\n ok %v\nwant:\n statements %q\n props %+v\n ok %v",
					st, props, ok, tc.statements, tc.props, tc.ok)
			}
		})
	}
}

func TestEvalInstruction(t *testing.T) {
	for in, want := range map[string]string{
		" Make it RED. ":    "make it red",
		"... and is grey.":  "and is grey",
		"is it a dog? yes":  "is it a dog? yes",
		"A dog.\n":          "a dog.\n", // only spaces and periods are stripped
		"  . Two dogs .  .": "two dogs",
		"":                  "",
	} {
		if got := EvalInstruction(in); got != want {
			t.Errorf("EvalInstruction(%q) = %q, want %q", in, got, want)
		}
	}
}
