"""Everything that touches Ray: engine replicas and their router, sandbox
pool actors, and connecting to a cluster. The rest of the package is plain
Python and knows nothing of Ray."""
