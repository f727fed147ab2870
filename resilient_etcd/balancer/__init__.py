"""The balancer every transport uses, I/O kept out: the per-endpoint health state machine
(:mod:`.health`), the choice of endpoint with latency moves and the probe schedule (:mod:`.choice`),
and the process's one prober thread that drives the probes of every client (:mod:`.prober`).
The gRPC transport (:mod:`resilient_etcd.transport.pool`) and the Kubernetes client
(:mod:`resilient_etcd.kube.client`) keep only their I/O: dialling, sending a probe, closing a
connection."""
