// Command etcdctl wraps etcd's CLI so it can be built from the Go module
// proxy at a pinned release (etcd's own module carries replace directives).
package main

import "go.etcd.io/etcd/etcdctl/v3/ctlv3"

func main() {
	ctlv3.MustStart()
}
