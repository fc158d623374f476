-- Admission reads, per key with room, its first waiting runs in admission order (the keys found by
-- skipping through this index), so a key held at its per_key limit costs nothing, however many
-- of its runs wait.
CREATE INDEX durable_queue_waiting_key ON durable_queue_waiting (queue, key, priority, seq);
