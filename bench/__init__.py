"""p's benchmark suite (issue 5): `python -m bench` (or `invoke bench`); see bench/README.md.

Starts its own loopback sshd worker (tests/support/sshd.py), an isolated client HOME, generates its
inputs, measures each case against a baseline in the same run and writes bench/results.json.
"""
