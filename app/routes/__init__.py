"""One blueprint per endpoint group. Routes turn HTTP into plain requests and results back into HTTP."""
