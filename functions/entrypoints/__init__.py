"""The edge: the entry points' HTTP and callable plumbing, and the command line."""
