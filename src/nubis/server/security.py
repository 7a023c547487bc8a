"""Tokens (random, shown once, stored hashed) and the master key that encrypts secrets (AES-GCM)."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nubis.home import write_private

TOKEN_PREFIX = "nbs_"
KEY_BYTES = 32
NONCE_BYTES = 12


def generate_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """Tokens carry 256 random bits, so a plain sha256 is enough (as GitHub does for its tokens)."""
    return hashlib.sha256(token.encode()).hexdigest()


def load_or_create_master_key(path: Path) -> bytes:
    """``NUBIS_MASTER_KEY`` (base64) wins; else the key file, created on first start."""
    env = os.environ.get("NUBIS_MASTER_KEY")
    if env:
        key = base64.b64decode(env)
    elif path.exists():
        key = base64.b64decode(path.read_bytes().strip())
    else:
        key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
        write_private(path, base64.b64encode(key) + b"\n")
    if len(key) != KEY_BYTES:
        raise ValueError(f"the master key must be {KEY_BYTES} bytes (base64-encoded)")
    return key


class SecretBox:
    """AES-GCM with the master key; the associated data binds a ciphertext to its secret."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def encrypt(self, plaintext: bytes, associated: bytes) -> tuple[bytes, bytes]:
        nonce = os.urandom(NONCE_BYTES)
        return nonce, self._aead.encrypt(nonce, plaintext, associated)

    def decrypt(self, nonce: bytes, ciphertext: bytes, associated: bytes) -> bytes:
        return self._aead.decrypt(nonce, ciphertext, associated)
