//! poh-ttl: TTL garbage collection for a poh-storage store (in progress).
