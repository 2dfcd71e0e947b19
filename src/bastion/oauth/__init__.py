"""OAuth 2.0 and OpenID Connect: Bastion as a provider, and as a client of other providers."""
