"""The training machinery every task shares: the epoch loop (engine), per-epoch checkpoints
and random-number states (checkpoint), and the processes of a distributed run (distributed)."""
