"""Transport layers: endpoints, health, pool, retry policy and the call path (private)."""
