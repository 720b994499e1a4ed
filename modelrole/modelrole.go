// Package modelrole names the model roles of the method: the one
// declaration that the configuration, the model clients and the pipeline
// share.
package modelrole

import "fmt"

// Name is a model role, as written under the configuration's "roles" key.
type Name string

// The model roles.
const (
	// Captioner describes gallery and reference images.
	Captioner Name = "captioner"
	// Reasoner rewrites a query into target descriptions (stage 1).
	Reasoner Name = "reasoner"
	// Proposer writes the stage-2 propositions (the reasoner when unset).
	Proposer Name = "proposer"
	// Questioner proposes the question a chat asks back (the reasoner
	// when unset).
	Questioner Name = "questioner"
	// Verifier answers the propositions on the top candidates (stage 2).
	Verifier Name = "verifier"
	// Evaluator judges the top few against the query (stage 3).
	Evaluator Name = "evaluator"
	// Embedder is an OpenAI-compatible /embeddings server standing in for
	// in-process CLIP.
	Embedder Name = "embedder"
)

// All returns every role in pipeline order.
func All() []Name {
	return []Name{Captioner, Reasoner, Proposer, Questioner, Verifier, Evaluator, Embedder}
}

// Chat returns the chat-model roles (every role but the embedder) in
// pipeline order.
func Chat() []Name {
	return []Name{Captioner, Reasoner, Proposer, Questioner, Verifier, Evaluator}
}

// Parse returns the role named s, or an error listing the roles.
func Parse(s string) (Name, error) {
	for _, n := range All() {
		if string(n) == s {
			return n, nil
		}
	}
	return "", fmt.Errorf("%q is not a model role (want one of %v)", s, All())
}

// String returns the role's name.
func (n Name) String() string { return string(n) }

// TakesImages reports whether the role's requests carry images: its model
// must be able to see them.
func (n Name) TakesImages() bool {
	return n == Captioner || n == Verifier || n == Evaluator
}
