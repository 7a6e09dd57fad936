"""Developer commands: ``edgeward dev`` (a local stack), ``edgeward doctor``, and waiting for ports."""
