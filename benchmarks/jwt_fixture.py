"""An RSA key pair, its JWKS and PEM files, and one RS256 token that every request repeats."""
from __future__ import annotations

import json
import os
import time


class JwtFixture:
    issuer = "https://bench.fastgate.invalid/"
    audience = "bench-api"
    subject = "bench-user"
    kid = "bench-1"

    def __init__(self, directory: str):
        try:
            import jwt
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric import rsa
        except ImportError as e:  # pyjwt[crypto] is a test dependency of the project
            raise RuntimeError(f"JWT scenario needs pyjwt and cryptography: {e}") from None
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pub = key.public_key()
        now = int(time.time())
        self.token = jwt.encode(
            {"iss": self.issuer, "aud": self.audience, "sub": self.subject,
             "scope": "bench:read", "iat": now, "nbf": now - 60, "exp": now + 24 * 3600},
            key, algorithm="RS256", headers={"kid": self.kid})
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(pub))
        jwk.update({"kid": self.kid, "alg": "RS256", "use": "sig"})
        self.jwks_path = os.path.join(directory, "jwks.json")
        with open(self.jwks_path, "w") as f:
            json.dump({"keys": [jwk]}, f)
        self.public_pem_path = os.path.join(directory, "jwt-public.pem")
        with open(self.public_pem_path, "wb") as f:
            f.write(pub.public_bytes(serialization.Encoding.PEM,
                                     serialization.PublicFormat.SubjectPublicKeyInfo))
