"""Everything that touches Ray: engine replicas and their router, the
retrieval service, rollout workers, training and the sweep, and connecting to
a cluster. The rest of the package is plain Python and knows nothing of Ray."""
