"""Helpers shared by the tests, the benchmark (bench/) and the soak run (soak/).

Not part of ketch itself: what /proc says about a server's process tree, and
which local ports are free, written once for every harness that starts
servers and measures them.
"""
