"""Who is calling: bearer tokens (HS256 locally, RS256/ES256 from a JWKS in production)."""
