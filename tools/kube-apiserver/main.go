// Command kube-apiserver wraps k8s.io/kubernetes/cmd/kube-apiserver's entry point so it can be
// built from the Go module proxy at a pinned release.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	command := app.NewAPIServerCommand()
	code := cli.Run(command)
	os.Exit(code)
}
