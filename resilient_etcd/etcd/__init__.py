"""The etcd3-compatible API pieces: records, transactions, leases (watches and locks to come)."""
