// Renders Ollama TEMPLATEs with Go's own text/template, as Ollama does: reads a JSON list of
// {"template": ..., "values": {"System": ..., "Messages": [{"Role": ..., "Content": ...}]}}
// on stdin and writes a JSON list of {"output": ...} or {"error": ...} on stdout.
// No functions are registered: a TEMPLATE that needs one of Ollama's extras fails here.
package main

import (
	"encoding/json"
	"os"
	"strings"
	"text/template"
)

type job struct {
	Template string         `json:"template"`
	Values   map[string]any `json:"values"`
}

type result struct {
	Output *string `json:"output,omitempty"`
	Error  string  `json:"error,omitempty"`
}

func render(j job) result {
	tmpl, err := template.New("").Option("missingkey=error").Parse(j.Template)
	if err != nil {
		return result{Error: err.Error()}
	}
	var sb strings.Builder
	if err := tmpl.Execute(&sb, j.Values); err != nil {
		return result{Error: err.Error()}
	}
	out := sb.String()
	return result{Output: &out}
}

func main() {
	var jobs []job
	if err := json.NewDecoder(os.Stdin).Decode(&jobs); err != nil {
		os.Stderr.WriteString("bad input: " + err.Error() + "\n")
		os.Exit(2)
	}
	results := make([]result, len(jobs))
	for i, j := range jobs {
		results[i] = render(j)
	}
	if err := json.NewEncoder(os.Stdout).Encode(results); err != nil {
		os.Exit(3)
	}
}
