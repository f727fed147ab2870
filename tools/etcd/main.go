// Command etcd is a thin wrapper so the etcd server can be built from the Go
// module proxy: etcd's own module carries replace directives, which
// `go install pkg@version` refuses. This module pins the release instead.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
