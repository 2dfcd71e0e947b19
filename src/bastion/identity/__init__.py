"""Identity: users, password policy, email verification, password reset, MFA, mail."""
