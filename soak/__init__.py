"""The soak harness (make soak); trials.py is shared with tests/test_faults.py."""
