"""Test helpers: real brokers, servers and simulators started privately per test."""
