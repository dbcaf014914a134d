"""The only DirPort and network I/O of a cycle.

One HTTP request at a time under a shared deadline, ORPort probes, vote propagation.
"""
