// Command clientv3-driver runs the benchmarks' get loop with the official Go
// etcd client configured as kube-apiserver configures it (keepalive 30 s,
// keepalive timeout 10 s, dial timeout 20 s, per-request timeout given by
// -timeout). It prints one JSON line per call, with CLOCK_MONOTONIC times so the
// Python benchmark can line calls up with the faults it injects.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"io"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

func mono() float64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return float64(ts.Sec) + float64(ts.Nsec)/1e9
}

type record struct {
	S   float64 `json:"s"`
	E   float64 `json:"e"`
	OK  bool    `json:"ok"`
	Ep  *string `json:"ep"`
	Err string  `json:"err,omitempty"`
}

func main() {
	endpoints := flag.String("endpoints", "", "comma-separated host:port list")
	timeout := flag.Duration("timeout", 0, "per-request timeout (0: none)")
	pause := flag.Duration("pause", 10*time.Millisecond, "pause between calls")
	flag.Parse()

	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            strings.Split(*endpoints, ","),
		DialTimeout:          20 * time.Second,
		DialKeepAliveTime:    30 * time.Second,
		DialKeepAliveTimeout: 10 * time.Second,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		panic(err)
	}
	defer cli.Close()

	stop := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(stop) }()
	out := bufio.NewWriter(os.Stdout)
	enc := json.NewEncoder(out)
	for {
		select {
		case <-stop:
			return
		default:
		}
		ctx := context.Background()
		cancel := func() {}
		if *timeout > 0 {
			ctx, cancel = context.WithTimeout(ctx, *timeout)
		}
		s := mono()
		_, err := cli.Get(ctx, "/bench/key")
		cancel()
		r := record{S: s, E: mono(), OK: err == nil}
		if err != nil {
			r.Err = err.Error()
		}
		_ = enc.Encode(r)
		_ = out.Flush()
		time.Sleep(*pause)
	}
}
