"""Machinery behind the fixtures in tests/conftest.py: a real sshd, a terminal, process cleanup."""
