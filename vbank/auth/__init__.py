"""Users, roles, password hashing, sign-in sessions and sign-in throttling."""
