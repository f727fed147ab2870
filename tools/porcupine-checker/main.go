// porcupine-checker: is a history of etcd KV operations linearizable?
//
// Reads a JSON history written by tests/robustness (one object per operation) and checks it
// with porcupine against a model of etcd keys as registers (partitioned by key). A write whose
// outcome is unknown has no return time: it may have taken effect at any point after its call,
// or never (it is placed at the end of the history, where nothing observes it).
//
//	porcupine-checker -history h.json [-html out.html] [-timeout 60s]
//
// Exit 0: linearizable; 1: not (the visualisation, if asked for, shows where); 2: the check
// timed out or the input is bad.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"time"

	"github.com/anishathalye/porcupine"
)

// Op is one operation as the harness records it.
type Op struct {
	Client int     `json:"client"`
	Key    string  `json:"key"`
	Kind   string  `json:"op"`     // put, get, delete, cas
	Value  string  `json:"value"`  // put, cas: the value written
	Expect *string `json:"expect"` // cas: the value compared against (null: the key must be absent)
	Call   int64   `json:"call"`   // monotonic ns
	Return *int64  `json:"return"` // null: outcome unknown (a write that may or may not have been applied)
	Found  bool    `json:"found"`  // get: the key existed
	Got    string  `json:"got"`    // get: its value
	OK     bool    `json:"ok"`     // cas: the compare succeeded; delete: a key was deleted
}

type state struct {
	present bool
	value   string
}

func step(s interface{}, in interface{}, out interface{}) (bool, interface{}) {
	st := s.(state)
	op := in.(Op)
	unknown := op.Return == nil
	switch op.Kind {
	case "put":
		return true, state{true, op.Value}
	case "get":
		if !op.Found {
			return !st.present, st
		}
		return st.present && st.value == op.Got, st
	case "delete":
		if unknown {
			return true, state{}
		}
		return op.OK == st.present, state{}
	case "cas":
		match := (op.Expect == nil && !st.present) || (op.Expect != nil && st.present && st.value == *op.Expect)
		if unknown {
			if match {
				return true, state{true, op.Value}
			}
			return true, st
		}
		if op.OK != match {
			return false, st
		}
		if match {
			return true, state{true, op.Value}
		}
		return true, st
	}
	return false, st
}

func describe(in interface{}, _ interface{}) string {
	op := in.(Op)
	outcome := ""
	if op.Return == nil {
		outcome = " -> ?"
	}
	switch op.Kind {
	case "get":
		if !op.Found {
			return fmt.Sprintf("get(%s) -> absent", op.Key)
		}
		return fmt.Sprintf("get(%s) -> %q", op.Key, op.Got)
	case "cas":
		exp := "absent"
		if op.Expect != nil {
			exp = fmt.Sprintf("%q", *op.Expect)
		}
		return fmt.Sprintf("cas(%s, %s -> %q) = %v%s", op.Key, exp, op.Value, op.OK, outcome)
	case "delete":
		return fmt.Sprintf("delete(%s) = %v%s", op.Key, op.OK, outcome)
	}
	return fmt.Sprintf("%s(%s, %q)%s", op.Kind, op.Key, op.Value, outcome)
}

var model = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var order []string
		for _, o := range history {
			k := o.Input.(Op).Key
			if _, seen := byKey[k]; !seen {
				order = append(order, k)
			}
			byKey[k] = append(byKey[k], o)
		}
		out := make([][]porcupine.Operation, 0, len(order))
		for _, k := range order {
			out = append(out, byKey[k])
		}
		return out
	},
	Init:              func() interface{} { return state{} },
	Step:              step,
	DescribeOperation: describe,
	DescribeState: func(s interface{}) string {
		st := s.(state)
		if !st.present {
			return "absent"
		}
		return fmt.Sprintf("%q", st.value)
	},
}

func main() {
	historyPath := flag.String("history", "", "JSON history (a list of operations)")
	htmlPath := flag.String("html", "", "write porcupine's visualisation here")
	timeout := flag.Duration("timeout", 60*time.Second, "give up after this long (exit 2)")
	flag.Parse()
	data, err := os.ReadFile(*historyPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "porcupine-checker:", err)
		os.Exit(2)
	}
	var ops []Op
	if err := json.Unmarshal(data, &ops); err != nil {
		fmt.Fprintln(os.Stderr, "porcupine-checker: bad history:", err)
		os.Exit(2)
	}
	history := make([]porcupine.Operation, 0, len(ops))
	for _, op := range ops {
		ret := int64(math.MaxInt64) // unknown: may take effect at any time after its call, or never
		if op.Return != nil {
			ret = *op.Return
		}
		history = append(history, porcupine.Operation{ClientId: op.Client, Input: op, Call: op.Call, Output: nil, Return: ret})
	}
	result, info := porcupine.CheckOperationsVerbose(model, history, *timeout)
	if *htmlPath != "" {
		if err := porcupine.VisualizePath(model, info, *htmlPath); err != nil {
			fmt.Fprintln(os.Stderr, "porcupine-checker: visualisation:", err)
		}
	}
	fmt.Printf("%d operations: %s\n", len(ops), map[porcupine.CheckResult]string{
		porcupine.Ok: "linearizable", porcupine.Illegal: "NOT linearizable", porcupine.Unknown: "unknown (timed out)",
	}[result])
	switch result {
	case porcupine.Ok:
		os.Exit(0)
	case porcupine.Illegal:
		os.Exit(1)
	}
	os.Exit(2)
}
